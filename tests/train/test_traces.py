"""Trace builder: rejection sampling, label elimination, output columns, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import datasets
import pytest
from tag_model.grounding import parse_trace
from tag_train.teachers import TeacherReply, TemplateTeacher
from tag_train.traces import TraceBuildConfig, build_traces, load_records

from .conftest import LABELS

CFG = dict(family="qwen2_vl", labels=LABELS, min_face_px=32, use_dlib=False, chunk_size=4)


class ScriptedTeacher:
    """Wraps the template teacher; breaks the format or answers wrong on chosen attempts."""

    name = "scripted"
    uses_gold_label = True

    def __init__(self, bad_format: dict[int, int], wrong: dict[int, int]) -> None:
        self.inner = TemplateTeacher(seed=1)
        self.bad_format = bad_format  # sample index -> number of malformed replies first
        self.wrong = wrong  # sample index -> number of wrong answers (after format ones)
        self.seen: list[tuple[str, int, tuple[str, ...], str]] = []

    def generate(self, requests):
        out = []
        for r in requests:
            idx = int(r.sample_id.split(":")[1])
            self.seen.append((r.sample_id, r.attempt, r.eliminated, r.user))
            nf = self.bad_format.get(idx, 0)
            if r.attempt < nf:
                out.append(
                    TeacherReply("Global analysis: I forgot the rest", {"teacher": "scripted"})
                )
                continue
            text = self.inner.write(r)
            if r.attempt < nf + self.wrong.get(idx, 0):
                wrong = next(lab for lab in r.labels if lab != r.label and lab not in r.eliminated)
                text = text.replace(f"<answer> {r.label} </answer>", f"<answer> {wrong} </answer>")
            out.append(TeacherReply(text, {"teacher": "scripted", "attempt": r.attempt}))
        return out


def test_build_columns_and_traces_parse(synth_ds, tmp_path):
    s = build_traces(
        synth_ds, TemplateTeacher(seed=0), tmp_path / "out", TraceBuildConfig(**CFG), progress=False
    )
    assert s.total == len(synth_ds) == s.kept
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    for col in (
        "image",
        "label",
        "activated",
        "prompt",
        "trace",
        "teacher",
        "teacher_meta",
        "teacher_prompt",
    ):
        assert col in ds.column_names
    assert len(ds) == s.kept
    assert len(set(ds["id"])) == len(ds)
    for row in ds.select(range(5)):
        p = parse_trace(row["trace"], labels=LABELS)
        assert p.format_ok, p.errors
        assert p.answer == row["label"]
        assert row["prompt"][-1]["role"] == "user" and "AU" in row["prompt"][-1]["content"]
        w, h = row["image"].size
        for a in row["activated"]:
            x1, y1, x2, y2 = a["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert 0.5 <= a["prob"] <= 1.0
        meta = json.loads(row["teacher_meta"])
        assert meta["attempts"] == 1 and meta["eliminated"] == []
    summary = json.loads((tmp_path / "out" / "_build" / "summary.json").read_text())
    assert summary["kept"] == s.kept


def test_rejection_sampling_and_label_elimination(synth_ds, tmp_path):
    teacher = ScriptedTeacher(bad_format={0: 1, 1: 5}, wrong={2: 2, 3: 5})
    cfg = TraceBuildConfig(**{**CFG, "max_format_retries": 2, "max_label_retries": 2})
    s = build_traces(synth_ds.select(range(6)), teacher, tmp_path / "o", cfg, progress=False)
    # 0: 1 format failure then kept; 1: rejected after 3 format failures
    # 2: 2 wrong answers then kept; 3: rejected after 3 wrong answers; 4, 5 kept
    assert (s.kept, s.rejected_format, s.rejected_label) == (4, 1, 1)
    assert s.format_failures == 1 + 3
    assert s.label_failures == 2 + 3
    assert s.retries == 1 + 2 + 2 + 2
    by = {}
    for sid, attempt, elim, user in teacher.seen:
        by.setdefault(int(sid.split(":")[1]), []).append((attempt, elim, user))
    # label elimination: the rejected labels are named to the teacher, growing each retry
    elims = [e for _, e, _ in by[2]]
    assert elims[0] == () and len(elims[1]) == 1 and len(elims[2]) == 2
    assert elims[1][0] in by[2][1][2] and "wrong" in by[2][1][2]
    ds = datasets.load_from_disk(str(tmp_path / "o"))
    assert sorted(int(i.split(":")[1]) for i in ds["id"]) == [0, 2, 4, 5]
    meta = {int(r["id"].split(":")[1]): json.loads(r["teacher_meta"]) for r in ds}
    assert meta[2]["label_failures"] == 2 and len(meta[2]["eliminated"]) == 2
    assert meta[0]["format_failures"] == 1


def test_prototype_teacher_never_answers_an_eliminated_label(synth_ds, tmp_path):
    s = build_traces(
        synth_ds,
        TemplateTeacher(answer="prototype"),
        tmp_path / "p",
        TraceBuildConfig(**CFG),
        progress=False,
    )
    ds = datasets.load_from_disk(str(tmp_path / "p"))
    for r in ds:
        meta = json.loads(r["teacher_meta"])
        assert r["label"] not in meta["eliminated"]
        assert parse_trace(r["trace"], labels=LABELS).answer == r["label"]
    assert s.kept + s.rejected_label + s.rejected_format == s.total
    assert s.kept > 0


def test_quality_drops_are_counted(synth_ds, tmp_path):
    cfg = TraceBuildConfig(**{**CFG, "min_face_px": 500})  # no synthetic face is that large
    s = build_traces(
        synth_ds.select(range(5)), TemplateTeacher(), tmp_path / "q", cfg, progress=False
    )
    assert s.kept == 0 and s.dropped_quality == 5
    assert s.quality_reasons == {"face_too_small": 5}
    assert len(datasets.load_from_disk(str(tmp_path / "q"))) == 0


def test_build_freezes_old_objects_only_while_it_runs(synth_ds, tmp_path):
    """build_traces keeps the GC off pre-existing objects during the build and hands them
    back afterwards, even when the build raises; a caller's own freeze is left alone."""
    import gc

    seen: list[int] = []

    class Spy(TemplateTeacher):
        def generate(self, requests):
            seen.append(gc.get_freeze_count())
            return super().generate(requests)

    assert gc.get_freeze_count() == 0
    build_traces(
        synth_ds.select(range(2)), Spy(), tmp_path / "a", TraceBuildConfig(**CFG), progress=False
    )
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0

    with pytest.raises(ValueError, match="concurrency"):
        build_traces(
            synth_ds.select(range(2)), Spy(), tmp_path / "b", TraceBuildConfig(**{**CFG,
            "concurrency": 0}), progress=False,
        )  # fmt: skip
    assert gc.get_freeze_count() == 0

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        build_traces(
            synth_ds.select(range(2)),
            Spy(),
            tmp_path / "c",
            TraceBuildConfig(**CFG),
            progress=False,
        )
        # The caller's freeze survives (an unfreeze would empty it). Not ``>= frozen``: frozen
        # objects freed by refcount during the build leave the permanent generation.
        assert frozen > 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_rerun_is_idempotent_and_settings_mismatch_refused(synth_ds, tmp_path):
    out = tmp_path / "r"
    small = synth_ds.select(range(8))
    build_traces(small, TemplateTeacher(), out, TraceBuildConfig(**CFG), progress=False)
    first = datasets.load_from_disk(str(out))["trace"]
    s2 = build_traces(small, TemplateTeacher(), out, TraceBuildConfig(**CFG), progress=False)
    assert datasets.load_from_disk(str(out))["trace"] == first
    assert s2.kept == 8
    assert len((out / "_build" / "records.jsonl").read_text().splitlines()) == 8
    with pytest.raises(ValueError, match="other settings"):
        build_traces(
            small, TemplateTeacher(), out, TraceBuildConfig(**{**CFG, "top_k": 2}), progress=False
        )


def test_compact_prompt_style(synth_ds, tmp_path):
    small = synth_ds.select(range(3))
    cfg = TraceBuildConfig(**{**CFG, "prompt_style": "compact"})
    build_traces(small, TemplateTeacher(), tmp_path / "c", cfg, progress=False)
    rows = datasets.load_from_disk(str(tmp_path / "c"))
    text = rows[0]["prompt"][-1]["content"]
    assert text.startswith("Which emotion? One of: ") and "Verification loop" not in text
    with pytest.raises(ValueError, match="prompt_style: unknown style 'tiny'"):
        build_traces(
            small,
            TemplateTeacher(),
            tmp_path / "d",
            TraceBuildConfig(**{**CFG, "prompt_style": "tiny"}),
            progress=False,
        )


def test_torn_last_record_is_repaired(tmp_path):
    build = tmp_path / "_build"
    build.mkdir()
    (build / "records.jsonl").write_bytes(b'{"id": "a", "status": "kept"}\n{"id": "b", "sta')
    recs = load_records(tmp_path)
    assert list(recs) == ["a"]
    assert (build / "records.jsonl").read_bytes().endswith(b"}\n")


_KILL_SCRIPT = rf"""
import sys, time
from tag_model.datasets import load_rafdb
from tag_model.synth import attach_synth_landmarks
from tag_train.teachers import TemplateTeacher
from tag_train.traces import TraceBuildConfig, build_traces

class SlowTeacher(TemplateTeacher):
    def generate(self, requests):
        time.sleep(0.25)
        return super().generate(requests)

root, out = sys.argv[1], sys.argv[2]
ds = attach_synth_landmarks(load_rafdb(root, "train"), root)
cfg = TraceBuildConfig(family="qwen2_vl", labels={LABELS!r}, min_face_px=32, use_dlib=False, chunk_size=2)
build_traces(ds, SlowTeacher(seed=0), out, cfg, progress=False)
"""


def test_sigkill_then_resume_loses_and_duplicates_nothing(synth_root, synth_ds, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "build.py"
    script.write_text(_KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(synth_root), str(out)])
    rec = out / "_build" / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if rec.exists() and len(rec.read_text().splitlines()) >= 4:
            break
        if proc.poll() is not None:
            pytest.fail("the build ended before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(load_records(out))
    assert 4 <= done_before < len(synth_ds)
    assert not (out / "state.json").exists()  # never assembled
    s = build_traces(
        synth_ds,
        TemplateTeacher(seed=0),
        out,
        TraceBuildConfig(**{**CFG, "chunk_size": 2}),
        progress=False,
    )
    ds = datasets.load_from_disk(str(out))
    ids = ds["id"]
    assert len(ids) == len(set(ids)) == len(synth_ds) == s.kept
    lines = [json.loads(x)["id"] for x in rec.read_text().splitlines()]
    assert Counter(lines).most_common(1)[0][1] == 1  # each sample recorded exactly once
    # the resumed build equals an uninterrupted one
    ref = tmp_path / "ref"
    build_traces(
        synth_ds,
        TemplateTeacher(seed=0),
        ref,
        TraceBuildConfig(**{**CFG, "chunk_size": 2}),
        progress=False,
    )
    assert datasets.load_from_disk(str(ref))["trace"] == ds["trace"]
