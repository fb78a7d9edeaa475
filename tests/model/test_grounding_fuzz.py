"""Fuzzing the trace parsers: malformed completions never raise, missing parts always fail
``format_ok``, ``parse_batch`` agrees with ``parse_trace`` field for field, time is linear."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tag_model.grounding import ParseReason, parse_batch, parse_trace

from ._grounding_corpus import TAGS, assert_batch_agrees, corpus, missing_part, valid_trace


def _check(texts: list[str]) -> None:
    n_missing = 0
    for t in texts:
        pt = parse_trace(t)  # must not raise
        assert pt.format_ok == (not pt.errors)
        why = missing_part(t)
        if why is not None:
            n_missing += 1
            assert not pt.format_ok, (why, t)
    assert n_missing > len(texts) // 10  # the corpus really exercises missing parts
    pb = parse_batch(texts)
    assert_batch_agrees(texts, pb)
    assert 0 < int(pb.format_ok.sum()) < len(texts)


def test_fuzz_default() -> None:
    texts = corpus(6000, seed=1234)
    _check(texts)
    reasons = {int(r) for r in parse_batch(texts).reason}
    # the corpus reaches nearly every reason code
    assert len(reasons) >= 18, sorted(ParseReason(r).name for r in reasons)


@pytest.mark.slow
def test_fuzz_slow() -> None:
    for seed in range(10):
        _check(corpus(10_000, seed=seed))


_pieces = st.sampled_from((*TAGS, "happiness", "AU6", "AU 12", "1", ".", "-", "\ud800", "é"))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=8) | _pieces, max_size=30).map("".join))
def test_fuzz_hypothesis_text(text: str) -> None:
    pt = parse_trace(text)
    if missing_part(text) is not None:
        assert not pt.format_ok
    assert_batch_agrees([text, text + "\n"], parse_batch([text, text + "\n"]))


def _timed(fn, arg) -> float:
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def _inputs(n: int) -> dict[str, str]:
    import random

    rng = random.Random(0)
    traces = []
    while sum(map(len, traces)) < n:
        traces.append(valid_trace(rng))
    return {
        "traces": "\n".join(traces)[:n],
        "one line of AUs": ("Verification loop: Inspect → → " + "au 6 AU" * n)[:n],
        "box of spaces": ("Verification loop:\nInspect a→b→ <bbox>[" + " " * n)[:n] + "x</bbox>",
        "tags": ("<answer><bbox>-></bbox>→" * n)[:n],
    }


@pytest.mark.parametrize("which", ["traces", "one line of AUs", "box of spaces", "tags"])
def test_linear_time(which: str) -> None:
    """1 MB takes about 10x the time of 100 kB (bounded at 30x: no quadratic blow-up)."""
    small, big = _inputs(100_000)[which], _inputs(1_000_000)[which]
    parse_batch([small])  # warm up
    for fn in (parse_trace, lambda s: parse_batch([s])):
        t_small = max(_timed(fn, small), 1e-3)
        t_big = _timed(fn, big)
        assert t_big / t_small < 30, (which, t_small, t_big)
    assert_batch_agrees([small], parse_batch([small]))
