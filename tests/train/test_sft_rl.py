"""SFT and GRPO through the CLI with a tiny VLM: SIGKILL mid-run, then ``--resume`` continues.

The commands carry no ``--bf16`` flag: the same command a GPU run uses must train on this
CPU machine (in float32). Weight-exact resume is checked in ``test_resume.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# no --bf16 / --gradient_checkpointing: the CLI must pick what this machine can do
CPU = ["--report_to", "none", "--logging_steps", "1"]


def _run(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tag_train.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kw,
    )


def _kill_after_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 400) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ck in out.glob("checkpoint-*"):
            if (ck / "trainer_state.json").exists():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return int(ck.name.split("-")[1])
        if proc.poll() is not None:
            pytest.fail(
                "training ended before a checkpoint could be killed:\n" + proc.stdout.read()[-3000:]
            )
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


def _steps(metrics: Path) -> list[int]:
    """The steps of the training-loss rows of a metrics file (in file order)."""
    from tag_model.jsonl import read_jsonl

    return [r["step"] for r in read_jsonl(metrics)[0] if "loss" in r]


def _assert_saved(out: Path, source: Path) -> None:
    """The final weights, their config and the processor of ``source`` are saved in ``out``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json"):
        assert (out / name).is_file(), sorted(p.name for p in out.iterdir())
    model = AutoModelForImageTextToText.from_pretrained(out)
    ref = AutoModelForImageTextToText.from_pretrained(source)
    assert model.config.model_type == "qwen2_vl"
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    saved, original = AutoProcessor.from_pretrained(out), AutoProcessor.from_pretrained(source)
    assert saved.image_processor.to_dict() == original.image_processor.to_dict()
    assert saved.chat_template == original.chat_template


def _resume_and_check(cmd: list[str], out: Path, max_steps: int) -> dict:
    killed_at = _kill_after_checkpoint(_run(cmd), out)
    assert 0 < killed_at < max_steps
    assert _steps(out / "metrics.jsonl")[:killed_at] == list(range(1, killed_at + 1))
    proc = _run([*cmd, "--resume", "true"])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-4000:]
    if not torch.cuda.is_available():
        assert " no CUDA device, training in float32" in log, log[:2000]
    assert "resuming from" in log
    resumed_from = int(log.split("resuming from")[1].split("checkpoint-")[1].split()[0])
    assert resumed_from >= killed_at
    # the killed run's rows past the checkpoint are gone: every step appears once, in order
    assert _steps(out / "metrics.jsonl") == list(range(1, max_steps + 1))
    final = json.loads((out / f"checkpoint-{max_steps}" / "trainer_state.json").read_text())
    assert final["global_step"] == max_steps
    return {"log": log, "resumed_from": resumed_from}


def test_sft_sigkill_then_resume(tiny_dir, traces_dir, tmp_path):
    out = tmp_path / "sft"
    cmd = [
        "sft", "--model_name_or_path", str(tiny_dir), "--dataset_path", str(traces_dir),
        "--output_dir", str(out), "--max_steps", "8", "--save_steps", "2",
        "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", *CPU,
    ]  # fmt: skip
    r = _resume_and_check(cmd, out, 8)
    assert "trainable parameters" in r["log"]
    _assert_saved(out, tiny_dir)


def test_rl_sigkill_then_resume(tiny_dir, traces_dir, tmp_path):
    out = tmp_path / "rl"
    cmd = [
        "rl", "--model_name_or_path", str(tiny_dir), "--dataset_path", str(traces_dir),
        "--output_dir", str(out), "--max_steps", "4", "--save_steps", "1",
        "--per_device_train_batch_size", "4", "--num_generations", "2",
        "--max_completion_length", "24", "--learning_rate", "1e-5",
        "--reward_weights", "1.0", "0.5", "2.0", *CPU,
    ]  # fmt: skip
    r = _resume_and_check(cmd, out, 4)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1] if "reward" in rows[-1] else rows[-2]
    for key in (
        "rewards/format_reward/mean",
        "rewards/answer_reward/mean",
        "rewards/grounding_reward/mean",
        "grounding/parse_failure_rate",
        "tag/reward_share",
    ):
        assert key in last, sorted(last)
    assert 0.0 <= last["tag/reward_share"] < 1.0
    assert re.search(
        r"reward functions took [\d.]+ ms of a [\d.]+ s GRPO step \([\d.]+ %\), "
        r"median of \d+ steps",
        r["log"],
    )
    if not torch.cuda.is_available():
        assert "tag-train rl: rewards on cpu (auto: no CUDA device" in r["log"]
    _assert_saved(out, tiny_dir)


# ------------------------------------------------------------------------------ unit checks


@pytest.mark.parametrize("command", ["sft", "rl"])
def test_cpu_defaults_turn_bf16_off_without_cuda(monkeypatch, capsys, command):
    from tag_train.cli import _cpu_defaults

    argv = ["--config", "x.yaml", "--output_dir", "o"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _cpu_defaults(argv, command) == [*argv, "--bf16", "false"]
    assert capsys.readouterr().out == f"tag-train {command}: no CUDA device, training in float32\n"
    for explicit in (["--bf16", "true"], ["--bf16=true"], ["--bf16", "false"]):
        assert _cpu_defaults([*argv, *explicit], command) == [*argv, *explicit]
    assert _cpu_defaults(["--help"], command) == ["--help"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _cpu_defaults(argv, command) == argv  # bf16 stays TRL's default on CUDA
    assert capsys.readouterr().out == ""


def test_cli_parses_to_float32_without_cuda(monkeypatch):
    """The parse itself (where TrainingArguments validates bf16) passes on a CPU machine."""
    from tag_train._args import RLScriptArguments, SFTScriptArguments
    from tag_train.cli import _cpu_defaults
    from trl import GRPOConfig, SFTConfig, TrlParser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args_cls, cfg_cls in ((SFTScriptArguments, SFTConfig), (RLScriptArguments, GRPOConfig)):
        parser = TrlParser((args_cls, cfg_cls))
        _, cfg = parser.parse_args_and_config(_cpu_defaults(["--output_dir", "o"], "x"))
        assert cfg.bf16 is False


def test_reward_share_is_the_median_step():
    """A first step slowed by compilation does not move the reported share."""
    from types import SimpleNamespace

    from tag_train._callbacks import RewardShareCallback
    from tag_train.rewards import RewardTimer

    cb = RewardShareCallback(RewardTimer())
    cb.step_seconds = [10.0, 1.0, 1.2, 0.9, 1.1]
    cb.reward_seconds = [9.0, 0.010, 0.012, 0.009, 0.022]
    s = cb.summary()
    assert s["tag/reward_share"] == pytest.approx(0.010)  # shares 0.9, .01, .01, .01, .02
    assert s["tag/step_seconds"] == pytest.approx(1.1)
    assert s["tag/reward_seconds"] == pytest.approx(0.012)
    assert s["tag/steps"] == 5
    # warm-up time spent before the first step is not billed to it
    cb.timer.seconds = 3.0
    cb.on_train_begin(SimpleNamespace(), SimpleNamespace(), SimpleNamespace())
    assert cb.timer.seconds == 0.0
