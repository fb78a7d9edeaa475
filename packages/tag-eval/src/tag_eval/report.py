"""``tag-eval report``: one self-contained HTML page for one or more runs.

Everything is inlined (PNG images as base64 ``data:`` URIs, CSS in a ``<style>`` element): the
file can be mailed or archived and opens offline. Sections:

1. a metrics table (accuracy with its bootstrap interval, macro-F1, answered and format rates,
   every faithfulness metric with its interval), one column per run;
2. per-class accuracy / F1 and the confusion matrix of each run;
3. faithfulness charts (means with interval bars across runs; per-sample grounding F-score
   histograms), and preference-study results when ``compare`` folders are given;
4. a gallery per run: each sample's face with its predicted AU boxes (green) and the
   detector's boxes (red) drawn by :func:`tag_model.draw.draw_grounding`, beside its
   reasoning. Failures (wrong or missing answers) are shown first, then correct samples.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tag_eval._records import (
    METRICS_NAME,
    EvalInputError,
    group_pairs,
    load_record_image,
    load_run,
)
from tag_eval.faithfulness import FAITHFULNESS_METRICS
from tag_eval.judge import CRITERIA
from tag_eval.metrics import compute_metrics, plot_confusion

__all__ = ["build_report", "render_report"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
background:#fafafa}
h1{margin-top:0}h2{border-bottom:2px solid #3b6ea5;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0 16px;background:#fff}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:13px}
th:first-child,td:first-child{text-align:left}th{background:#e8eef6}
.ci{color:#777;font-size:11px}.runs{display:flex;flex-wrap:wrap;gap:24px}
.card{display:flex;gap:16px;background:#fff;border:1px solid #ddd;border-left:6px solid #2a9d3a;
padding:10px;margin:10px 0;border-radius:4px}.card.fail{border-left-color:#d62828}
.card img{width:460px;height:auto;image-rendering:pixelated;flex:none}
.card pre{white-space:pre-wrap;font-size:12px;margin:4px 0;max-height:260px;overflow:auto}
.meta{font-size:12px;color:#444}.badge{display:inline-block;padding:1px 6px;border-radius:3px;
color:#fff;font-size:11px}.ok{background:#2a9d3a}.bad{background:#d62828}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
img.chart{max-width:100%;background:#fff;border:1px solid #ddd}
img.cm{max-width:520px;background:#fff;border:1px solid #ddd}
"""

#: Which way is better for each faithfulness metric: "↑" higher, "↓" lower.
_BETTER = {
    "grounding_f": "↑",
    "au_precision": "↑",
    "au_recall": "↑",
    "hallucination_rate": "↓",
    "unactivated_au_rate": "↓",
    "region_miss_rate": "↓",
    "outside_face_rate": "↓",
    "consistency": "↑",
}

_LABELS = {
    "grounding_f": "grounding F-score",
    "au_precision": "AU precision",
    "au_recall": "AU recall",
    "hallucination_rate": "hallucination rate",
    "unactivated_au_rate": "  (a) AU not activated",
    "region_miss_rate": "  (b) box off its region",
    "outside_face_rate": "  (c) box outside face",
    "consistency": "EMFACS consistency",
}


def _png_b64(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fig_b64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def _fmt_ci(ci: Mapping[str, Any] | None) -> str:
    if not ci or ci.get("mean") is None:
        return "–"
    if ci.get("low") is None:  # one unit: no interval
        return f"{ci['mean']:.3f} <span class='ci'>n={ci['n']}</span>"
    return (
        f"{ci['mean']:.3f} <span class='ci'>[{ci['low']:.3f}, {ci['high']:.3f}] n={ci['n']}</span>"
    )


def _run_name(meta: Mapping[str, Any], run_dir: Path) -> str:
    """``model · prompt prompt · folder``: the model and the prompt it was asked with."""
    from tag_eval.run import normalize_prompt

    model = Path(str(meta.get("model", "?"))).name
    prompt = normalize_prompt(meta.get("prompt")) or "?"
    return f"{model} · {prompt} prompt · {run_dir.name}"


def _draw_sample(rec: Mapping[str, Any], run_dir: Path, size: int = 224) -> str | None:
    """Predicted boxes (left, green) beside the detector's (right, red), upscaled to ``size``."""
    from PIL import Image
    from tag_model.draw import draw_grounding

    image = load_record_image(rec, run_dir)
    if image is None:
        return None
    scale = max(size / max(image.size), 1.0)
    if scale > 1:  # upscale first so that boxes and labels are drawn crisply
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.LANCZOS
        )
    predicted = group_pairs(rec.get("pred_pairs") or [], scale)
    reference = [(int(a["au"]), [v * scale for v in a["box"]]) for a in rec.get("activated") or []]
    return _png_b64(draw_grounding(image, predicted, reference, layout="side_by_side"))


def _metrics_table(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in runs)
    rows = []

    def row(label: str, cells: list[str]) -> None:
        rows.append(
            f"<tr><td>{html.escape(label)}</td>{''.join(f'<td>{c}</td>' for c in cells)}</tr>"
        )

    row("samples", [str(m["classification"]["n"]) for _, m in runs])
    row("accuracy", [_fmt_ci(m["classification"].get("accuracy_ci")) for _, m in runs])
    row("macro-F1", [_fmt(m["classification"]["macro_f1"]) for _, m in runs])
    row("answered", [_fmt(m["classification"]["answered_rate"]) for _, m in runs])
    row("format ok", [_fmt(m["parse"]["format_ok_rate"]) for _, m in runs])

    def failures(m: Mapping[str, Any]) -> str:
        n = m["parse"].get("parse_failures")
        if not m["parse"].get("trace_expected", True):
            return "– (zero-shot: no trace asked)"
        if n is None:
            return "–"
        return f"{n} ({m['parse']['parse_failure_rate']:.1%})"

    row("parse failures (grounding F 0) ↓", [failures(m) for _, m in runs])
    row("empty activated lists", [_fmt(m["parse"].get("empty_activated")) for _, m in runs])
    for key in FAITHFULNESS_METRICS:
        row(
            f"{_LABELS[key]} {_BETTER[key]}",
            [_fmt_ci(m["faithfulness"].get(key)) for _, m in runs],
        )
    row(
        "hallucinated pairs / pairs",
        [
            f"{m['faithfulness']['counts']['hallucinated_pairs']} / {m['faithfulness']['counts']['pairs']}"
            for _, m in runs
        ],
    )
    row("seconds / sample", [_fmt(m["timing"]["seconds_per_sample"], 4) for _, m in runs])
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _per_class_table(m: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v['support']}</td><td>{_fmt(v['accuracy'])}</td>"
        f"<td>{_fmt(v['f1'])}</td></tr>"
        for name, v in m["classification"]["per_class"].items()
    )
    return f"<table><tr><th>class</th><th>n</th><th>accuracy</th><th>F1</th></tr>{rows}</table>"


_PARTS = ("mean", "low", "high")


def _value(f: Mapping[str, Any], key: str, part: str) -> float:
    v = (f.get(key) or {}).get(part)
    return np.nan if v is None else float(v)


def _faithfulness_chart(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    return _img(_fig_b64(_faithfulness_figure(runs)), "faithfulness chart", "chart")


def _faithfulness_figure(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> Any:
    """Means with interval bars across runs; an undefined mean is marked n/a, not drawn."""
    from matplotlib.figure import Figure

    keys = list(FAITHFULNESS_METRICS)
    fig = Figure(figsize=(11, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(keys))
    for j, (name, m) in enumerate(runs):
        f = m["faithfulness"]
        means, lo, hi = (np.array([_value(f, k, part) for k in keys]) for part in _PARTS)
        xs = x + j * width - 0.4 + width / 2
        defined = np.isfinite(means)
        # an undefined mean (no sample defines the metric) gets no bar, not a zero bar
        bars = ax.bar(
            xs[defined],
            means[defined],
            width,
            yerr=np.stack([means - lo, hi - means])[:, defined],
            capsize=3,
            label=name[:60],
        )
        color = bars.patches[0].get_facecolor() if bars.patches else None
        for xu in xs[~defined]:
            ax.text(xu, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color=color)
    ax.set_xticks(
        x, [f"{_LABELS[k].strip()} {_BETTER[k]}" for k in keys], rotation=20, ha="right", fontsize=8
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean (95% bootstrap CI)")
    ax.set_title(
        "Faithfulness against the AU detector (↑ higher is better, ↓ lower is better; "
        "n/a: undefined)",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _grounding_hist(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for name, m in runs:
        vals = [
            v["grounding_f"]
            for v in m.get("per_sample_faithfulness", {}).values()
            if v.get("grounding_f") is not None
        ]
        if vals:
            ax.hist(vals, bins=np.linspace(0, 1, 21), alpha=0.5, label=name[:40])
    ax.set_xlabel("per-sample grounding F-score (higher is better)")
    ax.set_ylabel("samples")
    ax.set_title("Grounding F-score per sample (unparsed completions score 0)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _img(_fig_b64(fig), "grounding F-score histogram", "chart")


def _gallery(
    records: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    run_dir: Path,
    *,
    n: int,
    seed: int,
    trace_expected: bool = True,
) -> str:
    from tag_eval.faithfulness import well_formed

    def good(r: Mapping[str, Any]) -> bool:
        # a right answer in a trace that did not parse is no success (zero-shot runs are
        # asked for no trace)
        ok_format = well_formed(r.get("parse")) or not trace_expected
        return bool(r.get("correct")) and ok_format

    fails = [r for r in records if not good(r)]
    goods = [r for r in records if good(r)]
    rng = random.Random(seed)
    n_fail = min(len(fails), max(n - min(len(goods), n // 2), 0))
    chosen = rng.sample(fails, n_fail) + rng.sample(goods, min(len(goods), n - n_fail))
    per = metrics.get("per_sample_faithfulness", {})
    cards = []
    for r in chosen:
        b64 = _draw_sample(r, run_dir)
        img = _img(b64, f"sample {r['id']}") if b64 else "<p>(image missing)</p>"
        ok = good(r)
        status = (
            "correct" if ok else "right answer, format failed" if r.get("correct") else "failure"
        )
        badge = f"<span class='badge {'ok' if ok else 'bad'}'>{status}</span>"
        f = per.get(r["id"], {})
        parse = r.get("parse", {})
        reasons = "; ".join(parse.get("reasons", [])) or "none"
        activated = (
            ", ".join(f"AU{a['au']} ({a['prob']:.2f})" for a in r.get("activated", [])) or "none"
        )
        cards.append(
            f"<div class='card{'' if ok else ' fail'}'>{img}<div>"
            f"<div class='meta'>{badge} <b>{html.escape(str(r['id']))}</b> · label "
            f"<b>{html.escape(str(r.get('label')))}</b> · prediction "
            f"<b>{html.escape(str(r.get('prediction')))}</b></div>"
            f"<div class='meta'>grounding F {_fmt(f.get('grounding_f'))} · AU P "
            f"{_fmt(f.get('au_precision'))} · AU R {_fmt(f.get('au_recall'))} · "
            f"hallucinated {f.get('n_hallucinated_pairs', 0)}/{f.get('n_pairs', 0)} · "
            f"consistent {_fmt(f.get('consistency'), 0)}</div>"
            f"<div class='meta'>detector: {html.escape(activated)}</div>"
            f"<div class='meta'>parse: format ok {parse.get('format_ok')} · issues: "
            f"{html.escape(reasons)}</div>"
            f"<pre>{html.escape(r.get('trace') or '(empty)')}</pre></div></div>"
        )
    legend = (
        "<p class='legend'>Left panel:<span style='background:#28dc28'></span>the model's "
        "AU boxes · right panel:<span style='background:#dc1e1e'></span>the AU detector's "
        "activated list</p>"
    )
    return legend + "".join(cards)


def _preference_table(name: str, summary: Mapping[str, Any]) -> str:
    """Win / tie / loss per criterion (run A's view) with Wilson intervals."""
    rows = []
    for crit in CRITERIA:
        e = summary.get(crit)
        if not e:
            continue
        cells = []
        for k in ("win", "tie", "loss"):
            rate, ci = e.get(f"{k}_rate"), e.get(f"{k}_ci")
            cells.append(
                f"{e[k]} ({rate:.2f} <span class='ci'>[{ci[0]:.2f}, {ci[1]:.2f}]</span>)"
                if rate is not None
                else f"{e[k]}"
            )
        rows.append(
            f"<tr><td>{crit.replace('_', ' ')}</td>{''.join(f'<td>{c}</td>' for c in cells)}"
            f"<td>{e['n']}</td><td>{e['invalid']}</td></tr>"
        )
    return (
        f"<h3>{html.escape(name)}</h3><table><tr><th>criterion</th><th>win (A)</th><th>tie</th>"
        f"<th>loss (A)</th><th>n</th><th>invalid</th></tr>{''.join(rows)}</table>"
    )


def _count_key_items(path: Path) -> int:
    """Items of a human-study export (its ``human_key.json``), or 0 when unreadable."""
    import json

    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    items = key.get("items", key) if isinstance(key, dict) else key
    return len(items) if isinstance(items, list | dict) else 0


def _preferences(compare_dirs: Sequence[Path]) -> str:
    import json

    parts = ["<h2>Preference studies</h2>"]
    any_judge = False
    for d in compare_dirs:
        found = False
        cj = d / "compare.json"
        if cj.exists():
            c = json.loads(cj.read_text(encoding="utf-8"))
            a = Path(str(c["run_a"]["dir"])).name
            b = Path(str(c["run_b"]["dir"])).name
            if "judge" in c:
                found = any_judge = True
                judge = c.get("judge_config", {}).get("model", "?")
                parts.append(
                    _preference_table(f"LLM judge {judge}: A = {a} vs B = {b}", c["judge"])
                )
        hs = d / "human_scores.json"
        if hs.exists():
            h = json.loads(hs.read_text(encoding="utf-8"))
            found = True
            a, b = Path(str(h.get("run_a"))).name, Path(str(h.get("run_b"))).name
            parts.append(_preference_table(f"Human raters: A = {a} vs B = {b}", h["human"]))
        if not found and (d / "human_key.json").exists():  # exported, no answers imported yet
            n_items = _count_key_items(d / "human_key.json")
            parts.append(
                f"<p>Human study exported in <code>{html.escape(d.name)}</code> "
                f"({n_items} items): no answers imported yet (<code>tag-eval compare "
                "--import_answers</code>).</p>"
            )
            found = True
        if not found:
            raise EvalInputError(
                f"{d}: no judge results (compare.json), human_scores.json or human-study "
                "export (human_key.json)"
            )
    note = "Intervals are 95% Wilson score intervals."
    if any_judge:  # the note on the judge only where a judge ran
        note = "Each LLM-judge pair is judged twice with positions swapped. " + note
    parts.append(f"<p class='meta'>{note}</p>")
    return "".join(parts)


def render_report(
    runs: Sequence[tuple[Path, Mapping[str, Any], Mapping[str, Any], Sequence[Mapping[str, Any]]]],
    *,
    title: str = "TAG evaluation report",
    gallery_size: int = 12,
    seed: int = 0,
    compare_dirs: Sequence[str | os.PathLike[str]] = (),
) -> str:
    """The HTML text for ``runs`` given as ``(run_dir, meta, metrics, records)``, plus the
    preference results found in ``compare_dirs`` (``tag-eval compare`` output folders)."""
    named = [(_run_name(meta, d), m) for d, meta, m, _ in runs]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Metrics</h2>",
        _metrics_table(named),
        "<h2>Faithfulness</h2>",
        _faithfulness_chart(named),
        _grounding_hist(named),
    ]
    if compare_dirs:
        parts.append(_preferences([Path(d) for d in compare_dirs]))
    parts.append("<h2>Per run</h2><div class='runs'>")
    for (d, meta, m, _), (name, _) in zip(runs, named):
        png = d / "confusion.png"
        if not png.exists():
            plot_confusion(m["classification"], png, title=name)
        cm_b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        settings = ", ".join(
            f"{k}={html.escape(str(meta.get(k)))}"
            for k in ("model", "dataset", "split", "prompt", "seed", "detector")
        )
        parts.append(
            f"<div><h3>{html.escape(name)}</h3><p class='meta'>{settings}; label space "
            f"{html.escape(meta['label_space']['name'])}</p>{_per_class_table(m)}"
            f"{_img(cm_b64, 'confusion matrix ' + name, 'cm')}</div>"
        )
    parts.append("</div>")
    for d, _meta, m, recs in runs:
        name = _run_name(_meta, d)
        parts.append(f"<h2>Samples: {html.escape(name)}</h2>")
        trace = m["parse"].get("trace_expected", _meta.get("prompt") != "zeroshot")
        parts.append(_gallery(recs, m, d, n=gallery_size, seed=seed, trace_expected=trace))
    parts.append("</body></html>")
    return "".join(parts)


def build_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str = "TAG evaluation report",
    gallery_size: int = 12,
    seed: int = 0,
    compare_dirs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write the report for ``run_dirs`` to ``out``; metrics are computed when missing.

    ``compare_dirs``: ``tag-eval compare`` output folders whose judge (``compare.json``) and
    human (``human_scores.json``) results get a preference section.
    """
    import json

    if not run_dirs:
        raise EvalInputError("no run directory given")
    runs = []
    for rd in run_dirs:
        d = Path(rd)
        meta, records = load_run(d)
        if not records:
            raise EvalInputError(f"run {d} has no samples yet")
        mpath = d / METRICS_NAME
        metrics = json.loads(mpath.read_text(encoding="utf-8")) if mpath.exists() else None
        if metrics is None or metrics["classification"]["n"] != len(records):
            metrics = compute_metrics(
                d,
                tau=meta.get("tau", 0.3),
                face_margin=meta.get("face_margin", 0.1),
                n_boot=meta.get("n_boot", 2000),
                seed=meta.get("seed", 0),
            )
        runs.append((d, meta, metrics, records))
    page = render_report(
        runs, title=title, gallery_size=gallery_size, seed=seed, compare_dirs=compare_dirs
    )
    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.write_text(page, encoding="utf-8")
    return outp
