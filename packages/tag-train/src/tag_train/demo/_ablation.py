"""``tag-train rl --preset ablation``: the paper's ablation in miniature.

GRPO runs twice from the same cached SFT checkpoint, with the same seed and steps: once with
format + answer + AU-grounding rewards, once with format + answer only (the grounding reward's
weight is 0, so TRL still logs it and both arms' curves are comparable). Both are evaluated
greedily on the same held-out faces, beside the SFT checkpoint. Every mean carries a
bootstrap 95% CI over faces, and the difference between the two RL arms a paired one.

Writes ``ablation.json``, ``ablation.md`` (the table) and ``ablation_curves.png`` (both arms'
sampled grounding and total reward per GRPO step) into the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ABLATION_METRICS", "ablation_report"]

#: (per-face key, name in the table, higher is better)
ABLATION_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("grounding", "grounding F", True),
    ("mean_iou", "mean IoU", True),
    ("hallucination", "AU hallucination rate", False),
    ("correct", "accuracy", True),
)


def _fmt(ci: dict[str, Any]) -> str:
    if ci.get("mean") is None:
        return "n/a"
    if ci.get("low") is None:
        return f"{ci['mean']:.3f} [no CI: one unit]"
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _fmt_diff(ci: dict[str, Any]) -> str:
    if ci.get("mean") is None:
        return "n/a"
    if ci.get("low") is None:
        return f"{ci['mean']:+.3f} [no CI: one unit]"
    return f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def ablation_report(
    run: Path,
    ev_sft: dict[str, Any],
    with_grounding: dict[str, Any],
    without_grounding: dict[str, Any],
    weights: tuple[float, float, float],
) -> dict[str, Any]:
    """The table, its goals and the figure, from the SFT evaluation and the two RL arms
    (each the dict :func:`tag_train.demo._run._rl_arm` returns)."""
    from tag_model.stats import bootstrap_ci, bootstrap_diff_ci

    evals = {
        "sft": ev_sft["per_face"],
        "rl_with_grounding": with_grounding["eval"]["per_face"],
        "rl_without_grounding": without_grounding["eval"]["per_face"],
    }
    table: dict[str, dict[str, Any]] = {}
    for key, name, _ in ABLATION_METRICS:
        row = {arm: bootstrap_ci(pf[key]) for arm, pf in evals.items()}
        row["difference"] = bootstrap_diff_ci(
            evals["rl_with_grounding"][key], evals["rl_without_grounding"][key], paired=True
        )
        table[name] = row
    g, iou, hall = table["grounding F"], table["mean IoU"], table["AU hallucination rate"]

    def above(ci: dict[str, Any]) -> bool:
        return ci.get("low") is not None and ci["low"] > 0

    goals = {
        "grounding F higher with the grounding reward (difference's CI above 0)": {
            "met": above(g["difference"]),
            "value": _fmt_diff(g["difference"]),
        },
        "mean IoU higher with the grounding reward (difference's CI above 0)": {
            "met": above(iou["difference"]),
            "value": _fmt_diff(iou["difference"]),
        },
        "AU hallucination rate no higher with the grounding reward (CI not above 0)": {
            "met": not above(hall["difference"]),
            "value": _fmt_diff(hall["difference"]),
        },
    }
    out = {
        "weights_with_grounding": list(weights),
        "weights_without_grounding": [1.0, 1.0, 0.0],
        "table": table,
        "rewards": {
            "rl_with_grounding": with_grounding["fifths"],
            "rl_without_grounding": without_grounding["fifths"],
        },
        "goals": goals,
    }
    (run / "ablation.json").write_text(json.dumps(out, indent=2))
    (run / "ablation.md").write_text(_markdown(table, goals, len(ev_sft["per_face"]["correct"])))
    _curves(
        run / "metrics.jsonl", run / "no_grounding" / "metrics.jsonl", run / "ablation_curves.png"
    )
    return out


def _markdown(table: dict[str, dict[str, Any]], goals: dict[str, Any], n: int) -> str:
    lines = [
        f"Greedy decoding on {n} held-out faces; mean [bootstrap 95% CI]. The difference is "
        "RL with the grounding reward minus RL without it, paired over the same faces. Mean IoU "
        "is the mean over faces of each face's mean over its detector entries; the AU "
        "hallucination rate is the share of named AUs the detector does not see.",
        "",
        "| metric | SFT | RL, format + answer + grounding | RL, format + answer | difference |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {_fmt(row['sft'])} | {_fmt(row['rl_with_grounding'])} | "
            f"{_fmt(row['rl_without_grounding'])} | {_fmt_diff(row['difference'])} |"
        )
    lines += ["", "Goals:", ""]
    lines += [f"- [{'met' if v['met'] else 'MISS'}] {k}: {v['value']}" for k, v in goals.items()]
    return "\n".join(lines) + "\n"


def _curves(with_path: Path, without_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for path, arm in ((with_path, "with grounding reward"), (without_path, "without")):
        if not path.exists():
            continue
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("phase") == "rl" and "reward" in r]
        steps = [r["step"] for r in rows]
        for ax, key, title in (
            (axes[0], "rewards/grounding_reward/mean", "sampled grounding reward"),
            (axes[1], "rewards/answer_reward/mean", "sampled answer reward"),
        ):
            ys = np.nan_to_num(np.asarray([r.get(key, np.nan) for r in rows], dtype=float))
            k = max(1, len(ys) // 10)
            (line,) = ax.plot(steps, ys, alpha=0.2)
            if len(ys) >= k:
                ax.plot(
                    steps[k - 1 :],
                    np.convolve(ys, np.ones(k) / k, "valid"),
                    color=line.get_color(),
                    label=arm,
                )
            ax.set_title(title)
            ax.set_xlabel("GRPO step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
