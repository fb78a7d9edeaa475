"""Prints, after the benchmark table, each backend's speed-up over its group's baseline."""

from __future__ import annotations

from collections import defaultdict

import pytest


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    groups: dict[str, list] = defaultdict(list)
    for bench in session.benchmarks:
        if bench.stats is not None and bench.stats.rounds:
            groups[bench.group or ""].append(bench)
    tr = terminalreporter
    tr.section("speed-ups over each group's baselines (median time, measured in this run)")
    for group, benches in sorted(groups.items()):
        by_role = {b.extra_info.get("backend", b.name): b.stats.median for b in benches}
        baselines = [b.extra_info["backend"] for b in benches if b.extra_info.get("baseline")]
        tr.write_line(f"{group}:")
        for name, t in sorted(by_role.items(), key=lambda kv: kv[1]):
            ratios = ", ".join(
                f"{by_role[base] / t:8.1f}x vs {base}" for base in baselines if base != name
            )
            tr.write_line(f"    {name:<18} {t * 1e3:10.3f} ms   {ratios}")
