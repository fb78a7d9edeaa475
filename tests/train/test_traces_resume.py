"""Shards and combine, repeated kill -9 then rerun, the synth input folder, detector recording."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from tag_train.teachers import TemplateTeacher
from tag_train.traces import (
    ShardCombineError,
    TraceBuildConfig,
    build_traces,
    combine_shards,
    load_records,
    parse_shard,
)

from .conftest import LABELS

CFG = dict(family="qwen2_vl", labels=LABELS, min_face_px=32, use_dlib=False)
_COLS = ("id", "label", "path", "activated", "prompt", "teacher_prompt", "trace", "teacher_meta")


def _same(a: Path, b: Path) -> None:
    da, db = datasets.load_from_disk(str(a)), datasets.load_from_disk(str(b))
    assert da.column_names == db.column_names
    for c in _COLS:
        assert da[c] == db[c], c


def test_parse_shard():
    assert parse_shard(None) == (0, 1) and parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_three_shards_combine_to_the_unsharded_build(synth_ds, tmp_path):
    synth_ds = synth_ds.select(range(15))
    teacher = TemplateTeacher(answer="prototype", seed=0)
    full = build_traces(
        synth_ds, teacher, tmp_path / "full", TraceBuildConfig(**CFG), progress=False
    )
    dirs = []
    for i in range(3):
        d = tmp_path / f"shard{i}"
        s = build_traces(
            synth_ds, teacher, d, TraceBuildConfig(**CFG, shard=f"{i}/3"), progress=False
        )
        assert s.total == len(range(i, len(synth_ds), 3)) and s.complete
        idx = {r["index"] for r in load_records(d).values()}
        assert idx == set(range(i, len(synth_ds), 3))  # disjoint, deterministic slice
        dirs.append(d)
    # a missing shard, a repeated shard, a shard with other settings: refused, named
    with pytest.raises(ShardCombineError, match="shard\\(s\\) 1/3 missing"):
        combine_shards(tmp_path / "x", [dirs[0], dirs[2]])
    with pytest.raises(ShardCombineError, match="given twice"):
        combine_shards(tmp_path / "x", [dirs[0], dirs[0], dirs[1], dirs[2]])
    odd = tmp_path / "odd"
    build_traces(
        synth_ds, teacher, odd, TraceBuildConfig(**CFG, top_k=2, shard="1/3"), progress=False
    )
    with pytest.raises(ShardCombineError, match=r"config\.top_k"):
        combine_shards(tmp_path / "x", [dirs[0], odd, dirs[2]])
    s = combine_shards(tmp_path / "comb", list(reversed(dirs)))
    assert (s.total, s.kept, s.rejected_label) == (full.total, full.kept, full.rejected_label)
    _same(tmp_path / "full", tmp_path / "comb")
    summary = json.loads((tmp_path / "comb" / "_build" / "summary.json").read_text())
    assert summary["shards"] == 3 and summary["kept"] == full.kept
    assert (tmp_path / "comb" / "tag_settings.json").is_file()
    # the command line: `tag-train traces combine OUT SHARD_DIR...`; OUT is never clobbered
    from tag_train.cli import main

    comb = str(tmp_path / "comb")
    assert main(["traces", "combine", comb, *map(str, dirs)]) == 2  # exists: --overwrite
    assert main(["traces", "combine", comb, *map(str, dirs), "--overwrite"]) == 0
    _same(tmp_path / "full", tmp_path / "comb")


def test_unfinished_shard_is_refused(synth_ds, tmp_path):
    teacher = TemplateTeacher(seed=0)
    dirs = [tmp_path / f"s{i}" for i in range(2)]
    for i, d in enumerate(dirs):
        build_traces(synth_ds, teacher, d, TraceBuildConfig(**CFG, shard=f"{i}/2"), progress=False)
    rec = dirs[1] / "_build" / "records.jsonl"
    first = json.loads(rec.read_text().splitlines()[0])
    with rec.open("a") as fh:  # a later teacher_error for that face: not final any more
        fh.write(
            json.dumps({"id": first["id"], "index": first["index"], "status": "teacher_error"})
            + "\n"
        )
    with pytest.raises(ShardCombineError, match=r"unfinished: 1 of 12 rows.*1 in teacher_error"):
        combine_shards(tmp_path / "c", dirs)


def test_detector_recorded_in_manifest_rows_and_settings(synth_ds, tmp_path):
    out = tmp_path / "d"
    build_traces(
        synth_ds.select(range(3)), TemplateTeacher(), out, TraceBuildConfig(**CFG), progress=False
    )
    man = json.loads((out / "_build" / "manifest.json").read_text())
    assert man["detector"] == {"name": "geometric", "spec": "geometric", "settings": {}}
    row = datasets.load_from_disk(str(out))[0]
    assert json.loads(row["teacher_meta"])["detector"]["name"] == "geometric"
    assert json.loads((out / "tag_settings.json").read_text())["detector"] == "geometric"
    # another detector on the same output is another build: refused without --overwrite
    csv = tmp_path / "of.csv"
    csv.write_text("frame, face_id, success, AU12_r, AU12_c\n1, 0, 1, 3.0, 1\n")
    with pytest.raises(ValueError, match="differs in detector"):
        build_traces(
            synth_ds.select(range(3)),
            TemplateTeacher(),
            out,
            TraceBuildConfig(**CFG),
            detector=f"openface:{csv}",
            progress=False,
        )
    out2 = tmp_path / "of"
    build_traces(
        synth_ds.select(range(3)),
        TemplateTeacher(),
        out2,
        TraceBuildConfig(**CFG, threshold=0.5),
        detector=f"openface:{csv}",
        progress=False,
    )
    ds = datasets.load_from_disk(str(out2))
    # frame 1 is row 0: AU12 only; rows 1, 2 have no CSV frame: nothing activated
    assert [[a["au"] for a in r] for r in ds["activated"]] == [[12], [], []]
    meta = json.loads(ds[0]["teacher_meta"])["detector"]
    assert meta["name"] == "openface" and meta["settings"]["path"] == str(csv.resolve())


def test_synth_input_folder_is_deterministic_under_the_output_dir(tmp_path):
    from tag_train._args import TracesArguments
    from tag_train.traces._builder import _fingerprint
    from tag_train.traces._cli import load_input, synth_root

    args = TracesArguments(output_dir=str(tmp_path / "out"), dataset="synth", synth_n=6)
    a = load_input(args)
    root = Path(synth_root(args))
    assert root.parent == tmp_path / "out" / "_build" and (root / ".complete").is_file()
    mtime = (root / ".complete").stat().st_mtime_ns
    b = load_input(args)
    assert (root / ".complete").stat().st_mtime_ns == mtime  # reused, not rewritten
    assert _fingerprint(a) == _fingerprint(b)


_KILL_SCRIPT = rf"""
import sys, time
from tag_model.datasets import load_rafdb
from tag_model.synth import attach_synth_landmarks
from tag_train.teachers import TemplateTeacher
from tag_train.traces import TraceBuildConfig, build_traces

class SlowTeacher(TemplateTeacher):
    def generate(self, requests):
        time.sleep(0.1)
        return super().generate(requests)

root, out = sys.argv[1], sys.argv[2]
ds = attach_synth_landmarks(load_rafdb(root, "train"), root)
cfg = TraceBuildConfig(family="qwen2_vl", labels={LABELS!r}, min_face_px=32, use_dlib=False,
                       concurrency=3)
build_traces(ds, SlowTeacher(answer="prototype", seed=0), out, cfg, progress=False)
"""


@pytest.mark.slow
def test_kill_9_three_times_at_random_points_then_rerun_is_identical(
    synth_root, synth_ds, tmp_path
):
    rng = random.Random(1234)
    out = tmp_path / "killed"
    script = tmp_path / "build.py"
    script.write_text(_KILL_SCRIPT)
    rec = out / "_build" / "records.jsonl"
    for _ in range(3):
        done = len(load_records(out)) if rec.exists() else 0
        target = done + rng.randint(1, 4)
        proc = subprocess.Popen([sys.executable, str(script), str(synth_root), str(out)])
        deadline = time.time() + 180
        while time.time() < deadline:
            if rec.exists() and len(rec.read_text().splitlines()) >= target:
                break
            if proc.poll() is not None:
                pytest.fail("the build ended before it could be killed")
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))  # anywhere: mid-request, mid-write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "state.json").exists()
    partial = load_records(out)
    assert 3 <= len(partial) < len(synth_ds)
    cfg = TraceBuildConfig(**CFG, concurrency=3)
    teacher = TemplateTeacher(answer="prototype", seed=0)
    s = build_traces(synth_ds, teacher, out, cfg, progress=False)
    ref = tmp_path / "ref"
    r = build_traces(synth_ds, teacher, ref, cfg, progress=False)
    assert (s.kept, s.rejected_label, s.total) == (r.kept, r.rejected_label, r.total)
    ids = [json.loads(x)["id"] for x in rec.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(synth_ds)  # 0 duplicates, 0 missing
    assert load_records(out) == load_records(ref)
    _same(out, ref)
    arrow = sorted(p.name for p in out.glob("data-*.arrow"))
    for name in arrow:  # the saved data files are byte-identical
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_readme_trace_section_commands_parse():
    """README "Building traces at scale": the sharded build parses with tag-train's own
    parser (vLLM teacher from the shipped YAML, OpenFace CSVs as the detector)."""
    import re
    import shlex

    import tag_train
    from tag_train._args import TracesArguments
    from trl import TrlParser

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Building traces at scale\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    cfg = str(Path(tag_train.__file__).parent / "configs")
    lines = [x for x in block.splitlines() if x.strip() and not x.startswith("#")]
    build, combine = (shlex.split(x.replace("$CFG", cfg)) for x in lines)
    assert build[:2] == ["tag-train", "traces"] and combine[:3] == [
        "tag-train",
        "traces",
        "combine",
    ]
    (args,) = TrlParser((TracesArguments,)).parse_args_and_config(build[2:])
    assert args.teacher == "openai" and args.detector.startswith("openface:")
    assert parse_shard(args.shard) == (0, 2)
    assert args.output_dir in combine[4:]
