"""Resume restores everything, proven by the weights: a run interrupted after a checkpoint and
resumed ends with the same weights as the run that was never interrupted.

Each test trains once without interruption (``max_steps=4``, a checkpoint every 2 steps),
keeps the final weights, then removes ``checkpoint-4``: the output folder is then exactly what
a run killed after step 2's checkpoint and before step 4's leaves behind (``checkpoint-2`` and
a ``metrics.jsonl`` that already holds steps 3 and 4). ``--resume`` must load checkpoint-2's
weights, optimizer, scheduler, RNG and data position, train steps 3 and 4 again and end on the
same weights; ``metrics.jsonl`` must list each step once. Both runs share one process, one
seed and one CPU, so the arithmetic is the same: SFT (full and LoRA) comes back bit for bit
(measured max |diff| 0). GRPO samples its completions; the restored RNG and data order draw
the same ones (other completions would move the weights by ~1e-3), but its weights come back
within float32 round-off, not bit for bit (measured 5e-7, against 2.5e-3 of training
movement), so GRPO is held to ``RL_ATOL`` = 1e-5.

Without the fix (transformers 5's Trainer loading ``model.safetensors`` by raw key names),
steps 3-4 start from the base weights, not checkpoint-2's, and the weights differ by the
size of two optimizer steps (measured 2.9e-3 for SFT; the tests require the training
movement to be over 100x the tolerance).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import torch
from tag_model.jsonl import read_jsonl

ATOL = 1e-6
RL_ATOL = 1e-5


def _peft_flag(args_cls: type) -> dict:
    """The LoRA switch of ``ModelArguments`` (``use_peft``, TRL's name; ``lora`` before)."""
    names = {f.name for f in dataclasses.fields(args_cls)}
    return {"use_peft": True} if "use_peft" in names else {"lora": True}


def _common(out: Path) -> dict:
    return {
        "output_dir": str(out),
        "max_steps": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "report_to": "none",
        "bf16": False,
        "gradient_checkpointing": False,
        "seed": 0,
        "dataloader_num_workers": 0,
    }


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in trainer.model.state_dict().items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _interrupt(out: Path) -> None:
    """Leave ``out`` as a run killed between checkpoint-2 and checkpoint-4 would."""
    shutil.rmtree(out / "checkpoint-4")
    for f in out.glob("*.safetensors"):  # the final save of the finished run
        f.unlink()
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl")[0] if "loss" in r]
    assert steps == [1, 2, 3, 4]  # the rows a killed run would have logged past its checkpoint


def _check_resumed(
    out: Path,
    want: dict[str, torch.Tensor],
    got: dict[str, torch.Tensor],
    base: dict[str, torch.Tensor],
    atol: float = ATOL,
) -> None:
    """``got`` (resumed) equals ``want`` (uninterrupted) to round-off, while training moved
    ``want`` far from ``base``; ``metrics.jsonl`` lists each step once."""
    diff = _max_diff(want, got)
    moved = _max_diff(want, base)
    print(f"resumed vs uninterrupted: max |diff| {diff:.3g}; trained vs base: {moved:.3g}")
    assert diff <= atol, f"resumed weights differ from the uninterrupted run's by {diff:.3g}"
    assert moved > 100 * atol, f"training barely moved the weights ({moved:.3g}): no test"
    rows = read_jsonl(out / "metrics.jsonl")[0]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------ SFT


def _sft(tiny_dir: Path, traces_dir: Path, out: Path, resume: bool, **model_kw):
    from tag_train._args import SFTScriptArguments
    from tag_train.sft import run_sft
    from trl import SFTConfig

    script = SFTScriptArguments(
        model_name_or_path=str(tiny_dir), dataset_path=str(traces_dir), resume=resume, **model_kw
    )
    cfg = SFTConfig(**_common(out), per_device_train_batch_size=2, learning_rate=1e-3)
    return run_sft(script, cfg)


def _base_weights(tiny_dir: Path, **model_kw) -> dict[str, torch.Tensor]:
    from tag_train._args import SFTScriptArguments
    from tag_train._common import load_model_for_training

    torch.manual_seed(0)
    script = SFTScriptArguments(model_name_or_path=str(tiny_dir), **model_kw)
    model = load_model_for_training(script)[0]
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def test_sft_resume_restores_the_weights(tiny_dir, traces_dir, tmp_path, capsys):
    out = tmp_path / "sft"
    want = _weights(_sft(tiny_dir, traces_dir, out, resume=False))
    _interrupt(out)
    resumed = _sft(tiny_dir, traces_dir, out, resume=True)
    log = capsys.readouterr().out
    assert f"resuming from {out / 'checkpoint-2'}" in log
    assert re.search(r"metrics\.jsonl: dropped \d+ rows logged after step 2", log), log
    assert resumed.state.global_step == 4
    _check_resumed(out, want, _weights(resumed), _base_weights(tiny_dir))


def test_sft_lora_resume_restores_the_adapter(tiny_dir, traces_dir, tmp_path):
    """A PEFT checkpoint goes through the Trainer's adapter branch: LoRA weights and the
    projector (a ``modules_to_save``) come back."""
    from tag_train._args import SFTScriptArguments

    lora = _peft_flag(SFTScriptArguments)
    out = tmp_path / "sft-lora"
    first = _sft(tiny_dir, traces_dir, out, resume=False, **lora)
    want = _weights(first)
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoint-2" / "model.safetensors").exists()
    _interrupt(out)
    resumed = _sft(tiny_dir, traces_dir, out, resume=True, **lora)
    got = _weights(resumed)
    # LoRA B starts at zero and the projector copy at the base weights (LoRA A at random):
    # those must have moved in training, and every weight must come back
    moving = [k for k in want if "lora_B" in k or "modules_to_save" in k]
    assert any("lora_B" in k for k in moving) and any("modules_to_save" in k for k in moving)
    base = _base_weights(tiny_dir, **lora)
    _check_resumed(
        out, {k: want[k] for k in moving}, {k: got[k] for k in moving}, {k: base[k] for k in moving}
    )
    assert _max_diff(want, got) <= ATOL  # LoRA A (random init) and the frozen base too


def test_a_checkpoint_that_does_not_fit_is_refused(tiny_dir, tmp_path):
    """Never a silent partial load: a checkpoint of another shape raises, naming keys."""
    from tag_model.backbones import make_tiny_vlm
    from tag_train._common import CheckpointMismatchError, load_full_checkpoint
    from transformers import AutoModelForImageTextToText

    other = tmp_path / "other"
    make_tiny_vlm(
        "qwen2_vl", save_dir=other, text_hidden=64, text_layers=1, text_heads=2,
        text_kv_heads=1, text_intermediate=128, vision_depth=1, vision_width=32, vision_heads=2,
    )  # fmt: skip
    live = AutoModelForImageTextToText.from_pretrained(tiny_dir)  # 2 text layers
    before = {k: v.clone() for k, v in live.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"language_model\.layers\.1\."):
        load_full_checkpoint(live, str(other))
    assert all(torch.equal(before[k], v) for k, v in live.state_dict().items())
    # and the same checkpoint format, the same model: loads (through the key conversion)
    load_full_checkpoint(live, str(tiny_dir))


# ----------------------------------------------------------------------------------- GRPO


def _parity_reward(completion_ids, **kwargs) -> list[float]:
    """A reward that varies between completions (the tiny model's text never parses, so TAG's
    three rewards are all 0 and GRPO's advantages, hence its gradients, would be 0)."""
    return [sum(i % 2 for i in ids) / max(1, len(ids)) for ids in completion_ids]


def _rl(tiny_dir: Path, traces_dir: Path, out: Path, resume: bool, monkeypatch):
    import tag_train.rl as rl
    from tag_train._args import RLScriptArguments
    from trl import GRPOConfig

    tag_rewards = rl.get_tag_rewards
    monkeypatch.setattr(
        rl, "get_tag_rewards", lambda *a, **k: [*tag_rewards(*a, **k), _parity_reward]
    )
    script = RLScriptArguments(
        model_name_or_path=str(tiny_dir), dataset_path=str(traces_dir), resume=resume
    )
    cfg = GRPOConfig(
        **_common(out),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=12,
        learning_rate=1e-3,
    )
    return rl.run_rl(script, cfg)


def test_rl_resume_restores_the_weights(tiny_dir, traces_dir, tmp_path, monkeypatch, capsys):
    """GRPO samples its completions: the resumed run must also restore the RNG (and the data
    order) to draw the same completions for steps 3-4, so the weights match to round-off."""
    out = tmp_path / "rl"
    first = _rl(tiny_dir, traces_dir, out, False, monkeypatch)
    want = _weights(first)
    _interrupt(out)
    resumed = _rl(tiny_dir, traces_dir, out, True, monkeypatch)
    assert f"resuming from {out / 'checkpoint-2'}" in capsys.readouterr().out
    _check_resumed(out, want, _weights(resumed), _base_weights(tiny_dir), atol=RL_ATOL)
