"""Shared fixtures for the tag-train tests: a small SynthFACS dataset in RAF-DB layout."""

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
