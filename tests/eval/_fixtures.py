"""Session-wide builders shared by tests/eval and tests/e2e (built once per session).

``TAG_EVAL_TEST_MODEL`` may point at a real checkpoint directory (e.g. the training demo's) to
run the tests against it instead of the tiny random model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

_CACHE: dict[str, Path] = {}


def one_torch_thread():
    """Generator for an autouse fixture: torch on one thread while a test runs, then restore.

    On a 2-core machine shared with other processes, two OpenMP threads spin against each
    other and a tiny model's ``generate`` gets 10-50x slower; one thread is steady.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_model_dir(factory: Any) -> Path:
    """A tiny random Qwen2-VL saved with ``save_pretrained`` (or ``$TAG_EVAL_TEST_MODEL``)."""
    env = os.environ.get("TAG_EVAL_TEST_MODEL")
    if env:
        return Path(env)
    if "model" not in _CACHE:
        from tag_model.backbones import make_tiny_vlm

        d = factory.mktemp("tiny_vlm")
        make_tiny_vlm("qwen2_vl", save_dir=d, seed=0)
        _CACHE["model"] = d
    return _CACHE["model"]


def synth_rafdb_root(factory: Any, n: int = 12) -> Path:
    """A SynthFACS dataset written in RAF-DB layout (train and test split)."""
    key = f"rafdb{n}"
    if key not in _CACHE:
        from tag_model.synth import write_rafdb_layout

        d = factory.mktemp("synth_rafdb")
        write_rafdb_layout(d, n, size=112, seed=0, test_fraction=0.75)
        _CACHE[key] = d
    return _CACHE[key]


class OracleGenerator:
    """A scripted engine for ``run_eval(generator=...)``: writes a well-formed trace that
    grounds the sample's true activated AUs on their regions and answers ``answers[i]``.

    It knows the dataset (landmarks and labels) by image identity, as a perfect model would.
    """

    def __init__(self, ds: Any, *, family: str = "qwen2_vl", wrong_every: int = 0) -> None:
        from tag_model.backbones import get_adapter

        self.adapter = get_adapter(family)
        self.family = family
        self.name = "oracle"
        self.calls: list[int] = []
        self._by_bytes = {}
        for i in range(len(ds)):
            row = ds[i]
            self._by_bytes[row["image"].convert("RGB").tobytes()] = (i, row)
        self.wrong_every = wrong_every

    def generate(self, images, messages):
        from tag_eval._generate import Generation
        from tag_model.activation import build_activated_list
        from tag_model.detectors import GeometricAUDetector
        from tag_model.grounding import TraceStep, render_trace

        det = GeometricAUDetector()
        self.calls.append(len(images))
        out = []
        for im in images:
            messages(im)  # the prompt must build for every image
            i, row = self._by_bytes[im.convert("RGB").tobytes()]
            lm = np.asarray(row["landmarks"], np.float32)
            act = build_activated_list(lm, im.size, det.predict(landmarks=lm))
            steps = [
                TraceStep(
                    "region",
                    "active",
                    (a.au,),
                    tuple(
                        float(v)
                        for v in np.round(self.adapter.from_pixels(np.asarray(a.box), im.size))
                    ),
                )
                for a in act
            ]
            answer = row["label"]
            if self.wrong_every and i % self.wrong_every == 0:
                answer = "neutral" if answer != "neutral" else "happiness"
            text = render_trace("A face.", steps, [a.au for a in act], answer)
            out.append(Generation(text, 10, 20, 0.01 * len(images), len(images)))
        return out
