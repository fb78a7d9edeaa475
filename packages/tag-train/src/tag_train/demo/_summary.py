"""The demo's summary: goal checks, reward fifths, printed lines, reward curves, sample pictures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "compare_evals",
    "demo_goals",
    "draw_samples",
    "fmt_change",
    "fmt_eval",
    "fmt_rewards",
    "load_average",
    "plot_rewards",
    "rl_fifths",
]


def _ci(ci: dict[str, Any]) -> str:
    if ci.get("mean") is None:
        return "n/a"
    if ci.get("low") is None:
        return f"{ci['mean']:+.3f} [no CI: one step or face per side]"
    return f"{ci['mean']:+.3f} [95% CI {ci['low']:+.3f}, {ci['high']:+.3f}]"


def demo_goals(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The demo's goals, checked on a run's ``summary``: ``{goal: {met, value}}``.

    A rise counts only when the bootstrap 95% CI of the difference lies above 0: sampled
    rewards compare the last fifth of the GRPO steps with the first (two samples of steps),
    greedy metrics compare the same held-out faces after RL and after SFT (paired). A run
    that reused the cached SFT warm start is judged on the RL phase and the total only as
    measured (the cached stages took no time).
    """
    s, r = summary["eval_after_sft"], summary["eval_after_rl"]
    change = summary["rl_rewards"]["change"]
    greedy = summary.get("rl_vs_sft", {})
    total = summary["seconds"]["total"]
    d_acc = r["accuracy"] - s["accuracy"]

    def above(ci: dict[str, Any]) -> bool:
        return ci.get("low") is not None and ci["low"] > 0

    iou, gf = greedy.get("mean_iou", {}), greedy.get("grounding", {})
    return {
        "total wall time <= 900 s": {"met": total <= 900.0, "value": f"{total:.0f} s"},
        "greedy after SFT: format >= 0.95, accuracy >= 0.70, mean IoU >= 0.70": {
            "met": s["format"] >= 0.95 and s["accuracy"] >= 0.70 and s["mean_iou"] >= 0.70,
            "value": f"format {s['format']:.2f}, accuracy {s['accuracy']:.2f}, "
            f"mean IoU {s['mean_iou']:.3f}",
        },
        "sampled total reward rises over GRPO (last fifth - first fifth, CI above 0)": {
            "met": above(change["total"]),
            "value": _ci(change["total"]),
        },
        "sampled grounding reward rises over GRPO (last fifth - first fifth, CI above 0)": {
            "met": above(change["grounding"]),
            "value": _ci(change["grounding"]),
        },
        "greedy after RL: mean IoU or grounding F rises (paired CI above 0), "
        "accuracy falls by <= 0.03": {
            "met": (above(iou) or above(gf)) and d_acc >= -0.03,
            "value": f"mean IoU {_ci(iou)}, grounding F {_ci(gf)}, accuracy {d_acc:+.3f}",
        },
    }


def compare_evals(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Paired bootstrap CIs of ``after - before`` per greedy metric, over the same faces."""
    from tag_model.stats import bootstrap_diff_ci

    a, b = after["per_face"], before["per_face"]
    names = {
        "correct": "accuracy",
        "grounding": "grounding",
        "mean_iou": "mean_iou",
        "hallucination": "hallucination",
    }
    return {out: bootstrap_diff_ci(a[k], b[k], paired=True) for k, out in names.items()}


def rl_fifths(metrics_path: Path, phase: str | None = "rl") -> dict[str, dict[str, Any]]:
    """Mean sampled reward components (``format``, ``answer``, ``grounding``, ``total``) over
    the first and the last fifth of the GRPO steps logged in ``metrics_path``, and under
    ``change`` the difference (last - first) with its bootstrap 95% CI. ``phase``: the lines'
    ``"phase"`` to keep (the demo's ``metrics.jsonl`` mixes phases); ``None`` reads a GRPO
    run's own log, every line with a ``reward``.

    The CI resamples steps: each step's mean covers its own batch of prompts (and their
    generations), so steps are independent units and the interval accounts for the
    within-prompt correlation of a group's generations.
    """
    from tag_model.stats import bootstrap_diff_ci

    rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "reward" in r and (phase is None or r.get("phase") == phase)]
    keys = {
        "format": "rewards/format_reward/mean",
        "answer": "rewards/answer_reward/mean",
        "grounding": "rewards/grounding_reward/mean",
        "total": "reward",
    }
    n = max(1, len(rows) // 5)
    out: dict[str, dict[str, Any]] = {}
    for part, sel in (("first_fifth", rows[:n]), ("last_fifth", rows[-n:])):
        out[part] = {
            k: float(np.mean([r.get(v, np.nan) for r in sel])) if sel else float("nan")
            for k, v in keys.items()
        }
    out["change"] = {
        k: bootstrap_diff_ci(
            [r.get(v, np.nan) for r in rows[-n:]],
            [r.get(v, np.nan) for r in rows[:n]],
            paired=False,
        )
        for k, v in keys.items()
    }
    return out


def fmt_eval(ev: dict[str, Any]) -> str:
    """One printed line of a greedy evaluation."""
    return (
        f"format {ev['format']:.2f}  accuracy {ev['accuracy']:.2f}  mean IoU {ev['mean_iou']:.3f} "
        f"(AU recall {ev['au_recall']:.2f}, IoU when the AU is found {ev['iou_found']:.3f})  "
        f"grounding F {ev['grounding']:.3f}  hallucinated AUs {ev.get('hallucination', 0):.3f}"
    )


def fmt_rewards(d: dict[str, float]) -> str:
    """One printed line of reward components."""
    return "  ".join(f"{k} {v:.3f}" for k, v in d.items())


def fmt_change(d: dict[str, Any]) -> str:
    """One printed line of differences with their CIs."""
    return "  ".join(f"{k} {_ci(v)}" for k, v in d.items())


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def plot_rewards(metrics_path: Path, png: Path) -> None:
    """GRPO's reward components per step (raw and smoothed) as ``png``; nothing without RL rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("phase") == "rl" and "reward" in r]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, name in (
        ("rewards/format_reward/mean", "format"),
        ("rewards/answer_reward/mean", "answer"),
        ("rewards/grounding_reward/mean", "grounding"),
        ("reward", "total (weighted)"),
    ):
        ys = np.asarray([r.get(key, np.nan) for r in rows], dtype=float)
        k = max(1, len(ys) // 15)
        smooth = np.convolve(np.nan_to_num(ys), np.ones(k) / k, mode="valid")
        (line,) = ax.plot(steps, ys, alpha=0.25)
        ax.plot(steps[k - 1 :], smooth, color=line.get_color(), label=name)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward (sampled, T=1.0)")
    ax.set_title("TAG demo: GRPO reward components")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def draw_samples(
    run_dir: Path, ds: Any, ev: dict[str, Any], labels: tuple[str, ...], n: int
) -> None:
    """``samples/sample_<i>.png`` (predicted boxes beside the detector's) and ``.txt`` (the
    completion) for the first ``n`` faces of ``ds``, from the completions in ``ev``."""
    from tag_model.backbones import get_adapter
    from tag_model.draw import draw_grounding
    from tag_model.grounding import parse_trace

    out = run_dir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    adapter = get_adapter("qwen2_vl")
    for i in range(min(n, len(ds))):
        row = ds[i]
        text = ev["completions"][i]
        parsed = parse_trace(text, labels=labels)
        pred = []
        for st in parsed.steps:
            if st.box is None:
                continue
            px = np.asarray(
                adapter.to_pixels(np.asarray(st.box, dtype=np.float32), row["image"].size)
            ).tolist()
            pred.append((tuple(st.aus), px))
        ref = [(int(r["au"]), r["box"]) for r in row["activated"]]
        # draw on a 3x upscaled face so that the AU labels stay readable at 112 px
        k = max(1, 336 // max(row["image"].size))
        face = row["image"].resize((row["image"].width * k, row["image"].height * k))
        pred = [(aus, [float(v) * k for v in box]) for aus, box in pred]
        ref = [(au, [float(v) * k for v in box]) for au, box in ref]
        img = draw_grounding(face, pred, ref, layout="side_by_side")
        img.save(out / f"sample_{i}.png")
        (out / f"sample_{i}.txt").write_text(f"label: {row['label']}\n\n{text}\n")
