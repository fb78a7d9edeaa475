"""Shared fixtures for the tag-train tests: a small SynthFACS dataset in RAF-DB layout, a tiny
Qwen2-VL and a trace dataset of its faces."""

from __future__ import annotations

from pathlib import Path

import pytest

LABELS = ("happiness", "sadness", "surprise", "anger")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tag_model.synth import write_rafdb_layout

    root = tmp_path_factory.mktemp("synth-rafdb")
    write_rafdb_layout(root, 30, size=112, seed=3, labels=LABELS, test_fraction=0.2)
    return root


@pytest.fixture(scope="session")
def synth_ds(synth_root: Path):
    """24 train rows with landmarks from the SynthFACS sidecar."""
    from tag_model.datasets import load_rafdb
    from tag_model.synth import attach_synth_landmarks

    return attach_synth_landmarks(load_rafdb(synth_root, "train"), str(synth_root))


def build_tiny(out: Path) -> Path:
    """A tiny Qwen2-VL (random weights, seed 0) and its processor saved in ``out``."""
    from tag_model.backbones import make_tiny_vlm

    make_tiny_vlm(
        "qwen2_vl",
        save_dir=out,
        text_hidden=64,
        text_layers=2,
        text_heads=2,
        text_kv_heads=1,
        text_intermediate=128,
        vision_depth=1,
        vision_width=32,
        vision_heads=2,
    )
    return out


def build_trace_dataset(synth_ds, out: Path) -> Path:
    """8 compact template traces of SynthFACS faces (RAF-DB layout) saved in ``out``."""
    from tag_train.teachers import TemplateTeacher
    from tag_train.traces import TraceBuildConfig, build_traces

    build_traces(
        synth_ds.select(range(8)),
        TemplateTeacher(style="compact", variety=0.0),
        out,
        TraceBuildConfig(family="qwen2_vl", labels=LABELS, min_face_px=32, use_dlib=False),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def traces_dir(synth_ds, tmp_path_factory) -> Path:
    return build_trace_dataset(synth_ds, tmp_path_factory.mktemp("traces"))
