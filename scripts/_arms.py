"""The ``NAME JSON`` arms that ``demo_grpo_arms.py`` and ``demo_sft_arms.py`` take."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
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
