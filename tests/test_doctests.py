"""Runs the doctest examples in every workspace module that has one (TRL-style reward examples,
kernel docstrings). Modules are found by their source, so new examples are picked up."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC_DIRS = [ROOT / "kernels" / "src", *sorted((ROOT / "packages").glob("*/src"))]


def _modules_with_examples() -> list[str]:
    found = []
    for src in SRC_DIRS:
        for path in sorted(src.rglob("*.py")):
            if ">>> " not in path.read_text(encoding="utf-8"):
                continue
            rel = path.relative_to(src).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append(".".join(parts))
    return found


def _checked_examples(module: object) -> int:
    """Examples that run and compare an output: not skipped, and with an expected result
    (an assignment alone checks nothing)."""
    n = 0
    for test in doctest.DocTestFinder().find(module):
        for ex in test.examples:
            if ex.want.strip() and not ex.options.get(doctest.SKIP, False):
                n += 1
    return n


@pytest.mark.parametrize("name", _modules_with_examples())
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    assert _checked_examples(module) > 0, f"{name}: no example checks an output (all skipped?)"
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
