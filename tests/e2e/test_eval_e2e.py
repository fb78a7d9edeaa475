"""End to end: SynthFACS in RAF-DB layout -> ``tag-eval run`` -> ``compare`` -> ``report``.

The model is a tiny random Qwen2-VL saved to disk (or ``$TAG_EVAL_TEST_MODEL``, e.g. the
training demo's checkpoint). A second, scripted "oracle" run (a perfect grounded model) gives
the judge something to prefer. The judge is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tag_eval.cli import main
from tag_eval.run import RunConfig, load_eval_dataset, run_eval

from .._chat_server import ChatServer
from ..eval._fixtures import OracleGenerator, one_torch_thread, synth_rafdb_root, tiny_model_dir

LIMIT = 4


@pytest.fixture(autouse=True)
def _one_torch_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory):
    return synth_rafdb_root(tmp_path_factory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture
def judge():
    srv = ChatServer().start()
    yield srv
    srv.stop()


def _run_args(model, root, out, *extra):
    return [
        "run",
        "--model_name_or_path",
        str(model),
        "--dataset",
        "rafdb",
        "--data_root",
        str(root),
        "--split",
        "test",
        "--output_dir",
        str(out),
        "--per_device_eval_batch_size",
        "2",
        "--max_new_tokens",
        "10",
        "--limit",
        str(LIMIT),
        "--n_boot",
        "300",
        "--no_progress",
        *extra,
    ]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


class _Interrupt:
    """Wraps a generator and raises KeyboardInterrupt on the ``n``-th batch (a Ctrl-C)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0
        self.adapter, self.family, self.name = inner.adapter, inner.family, inner.name

    def generate(self, images, messages):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.inner.generate(images, messages)


def test_run_compare_report(rafdb_root, model_dir, judge, tmp_path, capsys, monkeypatch):
    from tag_eval._generate import load_generator

    runs = tmp_path / "runs"
    # 1. run: the tiny model with TAG's grounded prompt, and the zero-shot baseline prompt
    assert main(_run_args(model_dir, rafdb_root, runs / "tiny")) == 0
    zs = _run_args(
        model_dir, rafdb_root, runs / "tiny_zs", "--prompt_style", "zeroshot", "--limit", "2"
    )
    assert main(zs) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out
    tiny = _jsonl(runs / "tiny" / "samples.jsonl")
    assert len(tiny) == LIMIT and len({r["id"] for r in tiny}) == LIMIT
    metrics = json.loads((runs / "tiny" / "metrics.json").read_text())
    assert metrics["classification"]["n"] == LIMIT
    assert metrics["label_space"]["name"] == "rafdb"
    assert set(metrics["faithfulness"]) >= {
        "grounding_f",
        "au_precision",
        "au_recall",
        "hallucination_rate",
        "consistency",
    }
    assert (runs / "tiny" / "confusion.png").stat().st_size > 1000
    # accuracy in metrics.json is exactly what the JSONL says
    acc = sum(r["prediction_id"] == r["label_id"] for r in tiny) / LIMIT
    assert metrics["classification"]["accuracy"] == pytest.approx(acc)
    zs_meta = json.loads((runs / "tiny_zs" / "run.json").read_text())
    assert zs_meta["prompt"] == "zeroshot"

    # 1b. interrupted (Ctrl-C during the 2nd batch), then resumed from the CLI: same result
    gen = _Interrupt(load_generator(str(model_dir), max_new_tokens=10), n=2)
    cfg = RunConfig(
        model_name_or_path=str(model_dir),
        dataset="rafdb",
        data_root=str(rafdb_root),
        split="test",
        output_dir=str(runs / "resumed"),
        per_device_eval_batch_size=2,
        max_new_tokens=10,
        limit=LIMIT,
        n_boot=300,
    )
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, generator=gen)
    assert len(_jsonl(runs / "resumed" / "samples.jsonl")) == 2
    assert main(_run_args(model_dir, rafdb_root, runs / "resumed")) == 0
    resumed = _jsonl(runs / "resumed" / "samples.jsonl")
    assert [r["id"] for r in resumed] == [r["id"] for r in tiny]
    assert [r["trace"] for r in resumed] == [r["trace"] for r in tiny]

    # an oracle "TAG" run on the same images (scripted, well-grounded traces)
    ds, _ = load_eval_dataset("rafdb", rafdb_root, "test")
    run_eval(
        RunConfig(
            model_name_or_path="oracle",
            dataset="rafdb",
            data_root=str(rafdb_root),
            output_dir=str(runs / "oracle"),
            per_device_eval_batch_size=2,
            limit=LIMIT,
            n_boot=300,
        ),
        generator=OracleGenerator(ds),
    )

    # 2. compare: LLM judge on the local server (key from the env, never written) + human export
    monkeypatch.setenv("E2E_JUDGE_KEY", "sk-e2e-secret")
    cmp_dir = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            str(runs / "oracle"),
            str(runs / "tiny"),
            "--output_dir",
            str(cmp_dir),
            "--judge_url",
            judge.base_url,
            "--judge_model",
            "local-judge",
            "--judge_api_key_env",
            "E2E_JUDGE_KEY",
            "--judge_backoff",
            "0",
            "--export_human",
            "--no_progress",
        ]
    )
    assert rc == 0
    res = json.loads((cmp_dir / "compare.json").read_text())
    assert res["n_pairs"] == LIMIT
    assert len(judge.requests) == 2 * LIMIT
    assert all(r["headers"]["Authorization"] == "Bearer sk-e2e-secret" for r in judge.requests)
    oracle = _jsonl(runs / "oracle" / "samples.jsonl")
    tiny_aus = [len(r["pred_pairs"]) for r in tiny]
    expected_wins = sum(1 for o, t in zip(oracle, tiny_aus) if len(o["pred_pairs"]) > 0 and t == 0)
    vf = res["judge"]["visual_faithfulness"]
    assert vf["n"] == LIMIT and vf["win"] >= expected_wins >= 1
    assert vf["win_ci"][0] <= vf["win_rate"] <= vf["win_ci"][1]
    for f in cmp_dir.iterdir():
        assert "sk-e2e-secret" not in f.read_text(errors="replace")
    # human study: fill the sheet as a rater preferring the left trace, read it back
    sheet = (cmp_dir / "answer_sheet.csv").read_text().splitlines()
    filled = [sheet[0]] + [line.replace(",,,,,", ",me,left,left,tie,") for line in sheet[1:]]
    (tmp_path / "filled.csv").write_text("\n".join(filled) + "\n")
    rc = main(
        [
            "compare",
            "--import_answers",
            str(tmp_path / "filled.csv"),
            "--key",
            str(cmp_dir / "human_key.json"),
            "--output_dir",
            str(tmp_path / "human"),
        ]
    )
    assert rc == 0
    human = json.loads((tmp_path / "human" / "human_scores.json").read_text())["human"]
    key = json.loads((cmp_dir / "human_key.json").read_text())["items"]
    n_left_a = sum(v["left"] == "a" for v in key.values())
    assert human["visual_faithfulness"]["win"] == n_left_a
    assert human["visual_faithfulness"]["loss"] == LIMIT - n_left_a
    assert human["logical_coherence"]["tie"] == LIMIT

    # 3. report over all runs
    report = tmp_path / "report.html"
    rc = main(
        [
            "report",
            str(runs / "oracle"),
            str(runs / "tiny"),
            str(runs / "tiny_zs"),
            "--out",
            str(report),
            "--gallery_size",
            "3",
            "--compare",
            str(cmp_dir),
            str(tmp_path / "human"),
        ]
    )
    assert rc == 0
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 2 + 3 + 3 + 3 + 2
    assert "Preference studies" in page and "LLM judge local-judge" in page
    assert "Human raters" in page
    assert f"<td>{vf['win']} ({vf['win_rate']:.2f}" in page
    assert "http://" not in page and "https://" not in page
    assert page.count("class='card fail'") >= 3  # the tiny model's failures are shown


def test_bad_input_errors(rafdb_root, model_dir, tmp_path, capsys):
    # missing model path
    rc = main(_run_args(tmp_path / "missing_model", rafdb_root, tmp_path / "o"))
    assert rc == 3 and "model path not found" in capsys.readouterr().err
    # empty dataset (RAF-DB layout with an empty test split)
    empty = tmp_path / "empty"
    (empty / "EmoLabel").mkdir(parents=True)
    (empty / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\n")
    (empty / "Image" / "aligned").mkdir(parents=True)
    src = next((rafdb_root / "Image" / "aligned").glob("train_*"))
    (empty / "Image" / "aligned" / "train_00001_aligned.jpg").write_bytes(src.read_bytes())
    rc = main(_run_args(model_dir, empty, tmp_path / "o2"))
    assert rc == 4 and "has no samples" in capsys.readouterr().err
    # a JSONL from another run's label space in the output directory
    out = tmp_path / "o3"
    out.mkdir()
    (out / "samples.jsonl").write_text(
        json.dumps({"id": "test_0001.jpg", "label": "neutral", "label_space": "ferplus"}) + "\n"
    )
    rc = main(_run_args(model_dir, rafdb_root, out))
    err = capsys.readouterr().err
    assert rc == 2 and "label space 'ferplus'" in err and "samples.jsonl:1" in err
    # compare refuses runs of different label spaces
    (out / "run.json").write_text(
        json.dumps({"label_space": {"name": "ferplus", "names": ["neutral"]}})
    )
    ok = tmp_path / "ok"
    assert main(_run_args(model_dir, rafdb_root, ok, "--limit", "1")) == 0
    capsys.readouterr()
    rc = main(["compare", str(ok), str(out), "--export_human", "--output_dir", str(tmp_path / "c")])
    assert rc == 2 and "different label spaces" in capsys.readouterr().err


def test_console_script_help():
    exe = Path(sys.executable).with_name("tag-eval")
    if not exe.exists():
        pytest.skip("tag-eval console script not installed in this environment")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "tag-eval run" in proc.stdout and "tag-eval compare" in proc.stdout
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2


@pytest.mark.slow
def test_killed_run_resumes(rafdb_root, model_dir, tmp_path):
    """SIGKILL a real ``tag-eval run`` process mid-way; rerunning completes it exactly."""
    exe = Path(sys.executable).with_name("tag-eval")
    out = tmp_path / "killed"
    args = _run_args(model_dir, rafdb_root, out, "--per_device_eval_batch_size", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    samples = out / "samples.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if samples.exists() and len(samples.read_text().splitlines()) >= 2:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(_jsonl(samples))
    assert 1 <= n_before < LIMIT, "the run finished before it could be killed"
    assert main(_run_args(model_dir, rafdb_root, out, "--per_device_eval_batch_size", "1")) == 0
    recs = _jsonl(samples)
    assert len(recs) == LIMIT and len({r["id"] for r in recs}) == LIMIT
    ref = tmp_path / "ref"
    assert main(_run_args(model_dir, rafdb_root, ref, "--per_device_eval_batch_size", "1")) == 0
    assert [r["trace"] for r in recs] == [r["trace"] for r in _jsonl(ref / "samples.jsonl")]
