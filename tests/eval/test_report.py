"""``tag-eval report``: a self-contained HTML page; rendered in headless Chromium when slow."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from tag_eval import EvalInputError
from tag_eval.cli import main
from tag_eval.report import build_report


def _data_images(page: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(m)))
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def test_report_is_self_contained_and_complete(crafted_runs, tmp_path):
    a, b = crafted_runs
    out = tmp_path / "report.html"
    rc = main(["report", str(a), str(b), "--out", str(out), "--gallery_size", "4"])
    assert rc == 0
    page = out.read_text()
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'(src|href)=["\']?(https?:|//|file:)', page)
    assert "<link" not in page and "<script" not in page
    imgs = _data_images(page)
    # 1 chart + 1 histogram + 2 confusion matrices + 2 x 4 gallery samples
    assert len(imgs) == 12
    assert all(im.size[0] > 50 and im.size[1] > 50 for im in imgs)
    # metrics were computed for the crafted runs and match the table
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert ma["classification"]["accuracy"] == 1.0
    assert f"{ma['faithfulness']['grounding_f']['mean']:.3f}" in page
    assert f"{mb['faithfulness']['hallucination_rate']['mean']:.3f}" in page
    for label in (
        "grounding F-score",
        "AU precision",
        "hallucination rate",
        "EMFACS consistency",
        "macro-F1",
        "confusion matrix",
    ):
        assert label in page
    # gallery: 4 cards a run; failures first, then up to half of them correct samples
    poor = [json.loads(x) for x in (b / "samples.jsonl").read_text().splitlines()]
    n_wrong = sum(not r["correct"] for r in poor)
    n_fail = min(n_wrong, 4 - min(len(poor) - n_wrong, 2))
    assert n_fail >= 3  # the poor run's failures are shown (red cards)
    assert page.count("class='card fail'") == n_fail
    assert page.count("class='card'") == 4 + 4 - n_fail  # the good run's 4 are all correct
    assert "&lt;answer&gt;" in page  # traces are escaped, not injected
    assert re.search(r"detector: AU\d+ \(\d\.\d\d\)", page)  # each card's activated list


def test_report_is_honest_about_formats_undefined_values_and_direction(crafted_runs, tmp_path):
    a, _ = crafted_runs
    recs = [json.loads(x) for x in (a / "samples.jsonl").read_text().splitlines()]
    # sample 0: the right answer, but the completion did not parse as a trace
    recs[0]["parse"] = {
        "format_ok": False,
        "well_formed": False,
        "answer_ok": True,
        "reasons": ["MISSING_VERIFICATION_LOOP at 0: no Verification loop"],
    }
    (a / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    # a compare folder with human results only: no note about the LLM judge
    human = tmp_path / "human"
    human.mkdir()
    (human / "human_scores.json").write_text(
        json.dumps({"run_a": str(a), "run_b": "other", "human": {}})
    )
    page = build_report(
        [a], tmp_path / "r.html", gallery_size=len(recs), compare_dirs=[human]
    ).read_text()
    # a card whose format failed is never marked correct
    assert page.count("right answer, format failed") == 1
    assert page.count("class='card fail'") == 1
    assert page.count(">correct</span>") == len(recs) - 1
    assert "judged twice" not in page and "Wilson" in page
    # parse failures counted apart; directions named; the prompt in every run title
    assert "parse failures (grounding F 0) ↓" in page and "1 (12.5%)" in page
    assert "grounding F-score ↑" in page and "hallucination rate ↓" in page
    assert "good · full prompt · run_good" in page
    # a zero-shot run is asked for no trace: its right answers are correct cards
    meta = json.loads((a / "run.json").read_text())
    (a / "run.json").write_text(json.dumps({**meta, "prompt": "zeroshot"}))
    (a / "metrics.json").unlink()
    page = build_report([a], tmp_path / "z.html", gallery_size=len(recs)).read_text()
    assert "format failed" not in page and page.count(">correct</span>") == len(recs)
    assert "zero-shot: no trace asked" in page and "good · zeroshot prompt" in page


def test_faithfulness_chart_draws_no_bar_for_an_undefined_mean():
    from tag_eval.faithfulness import FAITHFULNESS_METRICS
    from tag_eval.report import _faithfulness_figure

    f = {k: {"mean": 0.5, "low": 0.4, "high": 0.6, "n": 3} for k in FAITHFULNESS_METRICS}
    f["au_precision"] = {"mean": None, "low": None, "high": None, "n": 0}
    fig = _faithfulness_figure([("run", {"faithfulness": f})])
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0 or p.get_width() > 0]
    assert len(bars) == len(FAITHFULNESS_METRICS) - 1
    assert all(abs(p.get_height() - 0.5) < 1e-9 for p in bars)  # no zero bar
    assert [t.get_text() for t in ax.texts] == ["n/a"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].endswith("↑") and ticks[3].endswith("↓")
    assert "higher is better" in ax.get_title() and "lower is better" in ax.get_title()


def test_gallery_images_show_boxes_side_by_side(crafted_runs, tmp_path):
    a, _ = crafted_runs
    lines = (a / "samples.jsonl").read_text().splitlines()
    with_aus = [x for x in lines if json.loads(x)["activated"]]
    assert len(with_aus) >= 2
    (a / "samples.jsonl").write_text("\n".join(with_aus[:2]) + "\n")
    page = build_report([a], tmp_path / "r.html", gallery_size=2).read_text()
    gallery = _data_images(page)[-2:]
    gallery[0].save(tmp_path / "tag_eval_gallery_sample.png")  # left for a human to look at
    for im in gallery:
        arr = np.asarray(im.convert("RGB")).astype(int)
        w = arr.shape[1]
        green = (arr[..., 1] > 180) & (arr[..., 0] < 90) & (arr[..., 2] < 90)
        red = (arr[..., 0] > 180) & (arr[..., 1] < 60) & (arr[..., 2] < 60)
        assert w > 2 * arr.shape[0]  # two panels
        assert green[:, : w // 2].sum() > 50 and red[:, w // 2 :].sum() > 50


def test_report_bad_input(tmp_path, crafted_runs, capsys):
    with pytest.raises(EvalInputError, match="not a tag-eval run"):
        build_report([tmp_path], tmp_path / "x.html")
    a, b = crafted_runs
    # a corrupt line (not the torn last one) is one clear error line, exit status 2
    lines = (b / "samples.jsonl").read_text().splitlines(keepends=True)
    (b / "samples.jsonl").write_text(lines[0] + "{oops\n" + "".join(lines[1:]))
    assert main(["report", str(b), "--out", str(tmp_path / "y.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("tag-eval report: error: ")
    assert "samples.jsonl:2: invalid JSONL record" in err
    assert not (tmp_path / "y.html").exists()
    (a / "samples.jsonl").write_text("")
    with pytest.raises(EvalInputError, match="has no samples"):
        build_report([a], tmp_path / "x.html")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(crafted_runs, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    a, b = crafted_runs
    page = build_report([a, b], tmp_path / "report.html", gallery_size=3)
    shot = tmp_path / "shot.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--window-size=1280,4000",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    im = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert im.shape[:2] == (4000, 1280)
    # non-blank: many distinct colours, dark text pixels, and the charts' blue/green/red
    assert len(np.unique(im.reshape(-1, 3), axis=0)) > 200
    assert (im.sum(-1) < 150).mean() > 0.003
    assert im.std() > 20


def test_report_accepts_a_human_study_folder_with_only_its_export(crafted_runs, tmp_path):
    """`tag-eval report --compare` on a study that was exported but not answered yet: the report
    says so (with the item count) instead of refusing the folder."""
    from tag_eval.human_study import export_human_study

    a, b = crafted_runs
    ra = [json.loads(x) for x in (a / "samples.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (b / "samples.jsonl").read_text().splitlines()]
    study = tmp_path / "study"
    export_human_study(list(zip(ra, rb, strict=True)), study, run_a=a, run_b=b)
    assert (study / "human_key.json").exists() and not (study / "human_scores.json").exists()
    page = build_report([a, b], tmp_path / "s.html", compare_dirs=[study]).read_text()
    assert f"({len(ra)} items): no answers imported yet" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvalInputError, match="human-study export"):
        build_report([a], tmp_path / "e.html", compare_dirs=[empty])
