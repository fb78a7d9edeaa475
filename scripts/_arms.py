"""The ``NAME JSON`` arms that ``demo_grpo_arms.py`` and ``demo_sft_arms.py`` take, and the
fresh faces both can add."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def parse_arms(
    ap: argparse.ArgumentParser,
    words: Sequence[str],
    fields: Iterable[str],
    *,
    first: tuple[str, str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``[(name, overrides)]`` from ``NAME JSON ...`` (``first``: one more pair before them),
    or ``ap.error`` naming the arm whose JSON does not parse or sets a field not in ``fields``."""
    if len(words) % 2:
        ap.error("arms come in pairs: NAME JSON")
    fields = sorted(fields)
    pairs = [*([first] if first else []), *zip(words[::2], words[1::2], strict=True)]
    arms = []
    for name, text in pairs:
        try:
            ov = json.loads(text)
        except json.JSONDecodeError as exc:
            ap.error(f"arm {name}: its overrides are not JSON ({exc}): {text!r}")
        unknown = set(ov) - set(fields)
        if unknown:
            ap.error(f"arm {name}: unknown field(s) {sorted(unknown)}; use {fields}")
        arms.append((name, ov))
    return arms


def fresh_traces(base: Any, cache: Path, n: int) -> Path:
    """Template traces of ``n`` SynthFACS faces that no split of the demo preset ``base``
    uses (seed ``1000 + base.seed``), built once under ``<cache>/../fresh-s<seed>-n<n>/``;
    returns the trace dataset's folder."""
    from tag_train.demo._run import _faces, _traces

    root = cache.parent / f"fresh-s{base.seed}-n{n}"
    fresh = dataclasses.replace(base, seed=1000 + base.seed, n_train=n, n_eval=10)
    faces, _ = _faces(root / "faces", fresh)
    _traces(faces, root / "traces", fresh, True)
    return root / "traces"
