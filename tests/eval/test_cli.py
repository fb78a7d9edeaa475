"""``tag-eval`` on the command line: tag-train's parser family and names, YAML configs, one-line
errors with distinct exit statuses, ``--skip_missing``, and the openai and vllm engines."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import types
from typing import ClassVar

import pytest
from tag_eval.cli import EXIT_CODES, _parser, main
from tag_eval.run import RunConfig

from .._chat_server import ChatServer, completion
from ._fixtures import synth_rafdb_root, tiny_model_dir

TRACE = (
    "Global analysis: a smiling face.\nVerification loop:\n"
    "Inspect mouth → corners up → AU12 <bbox>[300,600,700,800]</bbox>\n"
    "Final conclusion: Combined AU12 indicate happiness.\n<answer> happiness </answer>"
)


@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory):
    return synth_rafdb_root(tmp_path_factory)


@pytest.fixture
def raf_copy(rafdb_root, tmp_path):
    """A writable copy of the synthetic RAF-DB (9 test images)."""
    dst = tmp_path / "raf"
    shutil.copytree(rafdb_root, dst)
    return dst


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _openai_args(srv: ChatServer, root, out, *extra: str) -> list[str]:
    return [
        "run",
        "--engine",
        "openai",
        "--base_url",
        srv.base_url,
        "--model",
        "served-vlm",
        "--api_key_env",
        "TAG_TEST_EVAL_KEY",
        "--dataset",
        "rafdb",
        "--data_root",
        str(root),
        "--output_dir",
        str(out),
        "--n_boot",
        "50",
        "--no_progress",
        *extra,
    ]


def test_run_flags_use_tag_train_names_and_old_spellings_still_parse():
    p = _parser(RunConfig, "tag-eval run", "")
    new = [
        "--model_name_or_path",
        "m",
        "--dataset",
        "rafdb",
        "--data_root",
        "d",
        "--output_dir",
        "o",
        "--prompt_style",
        "compact",
        "--per_device_eval_batch_size",
        "3",
        "--label_space",
        "rafdb",
        "--skip_missing",
    ]
    (cfg,) = p.parse_args_and_config(new)
    assert (cfg.model_name_or_path, cfg.data_root, cfg.output_dir) == ("m", "d", "o")
    assert cfg.prompt_style == "compact" and cfg.per_device_eval_batch_size == 3
    assert cfg.label_space == "rafdb" and cfg.skip_missing
    old = ["--model", "m", "--dataset", "rafdb", "--root", "d", "--out", "o", "--prompt", "full"]
    (cfg2,) = p.parse_args_and_config([*old, "--batch-size", "2", "--data-root", "e"])
    assert (cfg2.model_name_or_path, cfg2.output_dir, cfg2.prompt) == ("m", "o", "full")
    assert cfg2.per_device_eval_batch_size == 2 and cfg2.data_root == "e"
    (cfg3,) = p.parse_args_and_config(["--model", "m", "--dataset", "rafdb", "--root", "d"])
    assert cfg3.prompt_style is None and cfg3.prompt == "full"  # checkpoint's, else full


def test_yaml_config_with_flag_override(tmp_path):
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(
        "model_name_or_path: org/model\ndataset: rafdb\ndata_root: /data/raf\n"
        "per_device_eval_batch_size: 4\nprompt_style: compact\n"
    )
    p = _parser(RunConfig, "tag-eval run", "")
    (cfg,) = p.parse_args_and_config(["--config", str(cfg_file), "--prompt_style", "zeroshot"])
    assert cfg.model_name_or_path == "org/model" and cfg.per_device_eval_batch_size == 4
    assert cfg.prompt_style == "zeroshot"  # the flag beats the YAML


def test_usage_errors_are_one_line_with_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\ndataset: rafdb\ndata_root: d\nbatchsize: 3\n")
    assert main(["run", "--config", str(bad)]) == EXIT_CODES["usage"] == 2
    err = _err_line(capsys)
    assert "bad.yaml" in err and "unknown key(s) batchsize" in err
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in _err_line(capsys)
    assert main(["run", "--dataset", "rafdb"]) == 2
    assert "required" in _err_line(capsys)
    assert main(["run", "--model", "m", "--dataset", "rafdb", "--root", "d", "--bogus", "1"]) == 2
    assert "unrecognized arguments: --bogus 1" in _err_line(capsys)
    assert main(["nope"]) == 2 and "unknown command 'nope'" in _err_line(capsys)
    assert main(["compare", "only_one"]) == 2 and "exactly two runs" in _err_line(capsys)
    assert main(["report"]) == 2 and "at least one run" in _err_line(capsys)


def test_malformed_label_line_names_file_and_line(raf_copy, tmp_path, capsys):
    labels = raf_copy / "EmoLabel" / "list_patition_label.txt"
    n_lines = len(labels.read_text().splitlines())
    with labels.open("a") as fh:
        fh.write("test_0010.jpg nine\n")
    args = ["run", "--model", "org/model", "--dataset", "rafdb", "--data_root", str(raf_copy)]
    assert main([*args, "--output_dir", str(tmp_path / "o")]) == EXIT_CODES["dataset"] == 4
    err = _err_line(capsys)
    assert "list_patition_label.txt" in err and f"line {n_lines + 1}" in err and "nine" in err
    # --debug adds the traceback, the status stays
    assert main([*args, "--output_dir", str(tmp_path / "o"), "--debug"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("tag-eval run: error")


def test_openai_engine_scores_an_endpoint_with_the_same_prompts(
    rafdb_root, tmp_path, capsys, monkeypatch
):
    from tag_model.au import RAFDB
    from tag_model.backbones import build_messages
    from tag_model.datasets import load_fer_dataset

    monkeypatch.setenv("TAG_TEST_EVAL_KEY", "sk-test-123")
    out = tmp_path / "gpt"
    with ChatServer(lambda body, call: (200, completion(TRACE), 0.0)) as srv:
        rc = main(
            _openai_args(
                srv, rafdb_root, out, "--per_device_eval_batch_size", "4", "--concurrency", "2"
            )
        )
        bodies, headers = srv.bodies, srv.headers
    assert rc == 0, capsys.readouterr().err
    ds = load_fer_dataset("rafdb", rafdb_root, "test")
    assert len(bodies) == len(ds)
    b = bodies[0]
    assert b["model"] == "served-vlm" and b["temperature"] == 0.0 and b["max_tokens"] == 512
    parts = b["messages"][-1]["content"]
    img = next(p for p in parts if p["type"] == "image_url")["image_url"]["url"]
    assert img.startswith("data:image/png;base64,")
    text = next(p for p in parts if p["type"] == "text")["text"]
    # the prompt a local engine would build for the same image (qwen2_vl's 0-1000 boxes)
    from PIL import Image

    sent = Image.open(io.BytesIO(base64.b64decode(img.split(",", 1)[1])))
    want = build_messages(sent, RAFDB.names, family="qwen2_vl")
    assert text == next(p for p in want[-1]["content"] if p["type"] == "text")["text"]
    assert all(h.get("Authorization") == "Bearer sk-test-123" for h in headers)
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == len(ds) and all(r["trace"] == TRACE for r in recs)
    assert all(r["prediction"] == "happiness" and r["parse"]["well_formed"] for r in recs)
    assert recs[0]["timing"]["new_tokens"] == 5  # the server's usage
    meta = json.loads((out / "run.json").read_text())
    assert meta["engine"] == "openai" and meta["model"] == "served-vlm"
    assert meta["base_url"] == srv.base_url and meta["api_key_env"] == "TAG_TEST_EVAL_KEY"
    assert "sk-test-123" not in (out / "run.json").read_text()
    stdout = capsys.readouterr().out
    assert "parse failures 0/" in stdout and "accuracy" in stdout


def test_openai_endpoint_failure_is_status_5(rafdb_root, tmp_path, capsys):
    with ChatServer(lambda body, call: (503, {"error": "down"}, 0.0)) as srv:
        rc = main(_openai_args(srv, rafdb_root, tmp_path / "o", "--max_http_retries", "0"))
    assert rc == EXIT_CODES["endpoint"] == 5
    err = _err_line(capsys)
    assert "endpoint error" in err and "503" in err and srv.base_url in err


def test_unknown_family_is_status_2(rafdb_root, tmp_path, capsys):
    with ChatServer(lambda body, call: (200, completion(TRACE), 0.0)) as srv:
        rc = main(_openai_args(srv, rafdb_root, tmp_path / "o", "--family", "nosuchvlm"))
    assert rc == 2 and "nosuchvlm" in _err_line(capsys)


def test_skip_missing_counts_and_reports_missing_images(raf_copy, tmp_path, capsys):
    (raf_copy / "Image" / "aligned" / "test_0002_aligned.jpg").unlink()
    with ChatServer(lambda body, call: (200, completion(TRACE), 0.0)) as srv:
        rc = main(_openai_args(srv, raf_copy, tmp_path / "a"))
        err = _err_line(capsys)
        assert rc == 4 and "test_0002" in err and "--skip_missing" in err
        rc = main(_openai_args(srv, raf_copy, tmp_path / "b", "--skip_missing"))
        n_requests = len(srv.bodies)
    assert rc == 0
    out = capsys.readouterr().out
    assert "skipped 1 dataset row(s)" in out
    meta = json.loads((tmp_path / "b" / "run.json").read_text())
    assert len(meta["skipped_images"]["missing"]) == 1
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["skipped_images"] == 1
    assert n_requests == 8  # nine test images, one missing


class _FakeLLM:
    last_kwargs: ClassVar[dict] = {}

    def __init__(self, **kwargs):
        type(self).last_kwargs = kwargs

    def generate(self, prompts, params, use_tqdm=False):
        out = types.SimpleNamespace(text=TRACE, token_ids=[1, 2, 3])
        return [types.SimpleNamespace(outputs=[out], prompt_token_ids=[0] * 7) for _ in prompts]


def test_vllm_options_reach_the_engine(rafdb_root, tmp_path, tmp_path_factory, monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = _FakeLLM
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    model = tiny_model_dir(tmp_path_factory)

    def args(out: str, limit: str) -> list[str]:
        return [
            "run",
            "--engine",
            "vllm",
            "--model_name_or_path",
            str(model),
            "--dataset",
            "rafdb",
            "--data_root",
            str(rafdb_root),
            "--output_dir",
            str(tmp_path / out),
            "--limit",
            limit,
            "--n_boot",
            "20",
            "--no_progress",
        ]

    vllm_opts = ["--tensor_parallel_size", "2", "--gpu_memory_utilization", "0.55"]
    assert main([*args("v", "2"), *vllm_opts, "--max_model_len", "4096"]) == 0
    kw = _FakeLLM.last_kwargs
    assert kw["model"] == str(model) and kw["seed"] == 0
    assert kw["tensor_parallel_size"] == 2 and kw["gpu_memory_utilization"] == 0.55
    assert kw["max_model_len"] == 4096
    meta = json.loads((tmp_path / "v" / "run.json").read_text())
    assert meta["tensor_parallel_size"] == 2 and meta["max_model_len"] == 4096
    recs = (tmp_path / "v" / "samples.jsonl").read_text().splitlines()
    assert len(recs) == 2 and json.loads(recs[0])["trace"] == TRACE
    # without --max_model_len the engine keeps the model's own length
    assert main(args("w", "1")) == 0
    assert "max_model_len" not in _FakeLLM.last_kwargs
    assert _FakeLLM.last_kwargs["tensor_parallel_size"] == 1


def test_console_script_missing_model_subprocess(rafdb_root, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tag_eval.cli",
            "run",
            "--model_name_or_path",
            str(tmp_path / "missing"),
            "--dataset",
            "rafdb",
            "--data_root",
            str(rafdb_root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        f"tag-eval run: error: model path not found: {tmp_path / 'missing'}"
    ]
