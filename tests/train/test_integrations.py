"""tag_train.integrations: TAG's rewards behind verl, EasyR1 and OpenRLHF's contracts.

Every adapter must give exactly what ``tag_train.rewards`` gives on the same completions and
columns, never raise or return NaN on bad model output, score one batch with one parse and
one grounding-kernel call, and refuse a malformed ``ground_truth`` with an error naming the
field. (The real verl, in its own environment: ``test_integrations_verl.py``, slow.)
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from tag_model.backbones import get_adapter
from tag_model.grounding import TraceStep, render_trace
from tag_train.integrations import (
    GroundTruth,
    configure,
    easyr1,
    get_settings,
    openrlhf,
    score_batch,
    verl,
)
from tag_train.integrations import _score as score_mod
from tag_train.rewards import get_tag_rewards

LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 25, 26)
QWEN25_BUDGET = {"min_pixels": 3136, "max_pixels": 200_704}


def make_rows(n: int, family: str = "qwen2_vl", seed: int = 0, **budget):
    """``n`` realistic traces (some off, some truncated) with their ground truths."""
    rng = np.random.default_rng(seed)
    ad = get_adapter(family, **budget)
    texts, gts = [], []
    for i in range(n):
        w, h = int(rng.integers(64, 700)), int(rng.integers(64, 700))
        act, steps = [], []
        for au in rng.choice(AUS, size=int(rng.integers(0, 6)), replace=False):
            x1, y1 = rng.uniform(0, 0.7 * w), rng.uniform(0, 0.7 * h)
            box = [x1, y1, x1 + rng.uniform(4, 0.3 * w), y1 + rng.uniform(4, 0.3 * h)]
            act.append({"au": int(au), "prob": float(rng.uniform(0.5, 1)), "box": box})
            if rng.random() < 0.8:
                noisy = np.array(box) + rng.normal(0, 4, 4)
                m = np.round(ad.from_pixels(noisy, (w, h)))
                if m[0] < m[2] and m[1] < m[3] and (m >= 0).all():
                    steps.append(TraceStep("a region", "a change", (int(au),), tuple(m.tolist())))
        if rng.random() < 0.1:
            steps.append(TraceStep("the face", "looked at", (), (1, 1, 20, 20)))
        label = LABELS[i % len(LABELS)]
        answer = label if rng.random() < 0.7 else LABELS[(i + 3) % len(LABELS)]
        aus = sorted({a for s in steps for a in s.aus})
        text = render_trace("Muscle activity around the eyes and mouth.", steps, aus, answer)
        if rng.random() < 0.1:
            text = text[: int(rng.integers(0, len(text)))]
        texts.append(text)
        gts.append(GroundTruth(label, act, (w, h), family, labels=LABELS, **budget))
    return texts, gts


def reference(texts, gts, *, family=None, beta=1.0, class_aware=True, empty_value=1.0):
    """What tag_train.rewards gives on the same completions and dataset columns."""
    g0 = gts[0]
    processor = None
    if g0.min_pixels is not None or g0.max_pixels is not None:
        from types import SimpleNamespace

        processor = SimpleNamespace(min_pixels=g0.min_pixels, max_pixels=g0.max_pixels)
    f, a, g = get_tag_rewards(
        family or g0.family,
        labels=list(LABELS),
        beta=beta,
        class_aware=class_aware,
        empty_value=empty_value,
        processor=processor,
    )
    fmt = f(texts)
    ans = a(texts, label=[x.label for x in gts])
    grd = g(
        texts,
        activated=[[dict(e) for e in x.activated] for x in gts],
        image_size=[x.image_size for x in gts],
    )
    return np.array(fmt), np.array(ans, dtype=float), np.array(grd)


@pytest.fixture(autouse=True)
def _default_settings():
    configure()
    yield
    configure()


@pytest.fixture(scope="module")
def rows():
    a = make_rows(300, "qwen2_vl", seed=1)
    b = make_rows(200, "qwen2_5_vl", seed=2, **QWEN25_BUDGET)
    return a, b


# ----------------------------------------------------------------------------- the schema


def test_ground_truth_round_trips_and_normalises():
    gt = GroundTruth.from_any(
        {
            "label": " Happy ",
            "activated": [{"au": 12.0, "prob": 1, "box": [1, 2, 3, 4]}],
            "image_size": [64, 48],
            "family": "Qwen2.5-VL",
            "max_pixels": 200704,
        }
    )
    assert gt.label == "happiness" and gt.family == "qwen2_5_vl" and gt.max_pixels == 200704
    assert gt.activated == ({"au": 12, "prob": 1.0, "box": [1.0, 2.0, 3.0, 4.0]},)
    s = gt.to_json()
    json.loads(s)  # a plain JSON string
    assert GroundTruth.from_json(s) == gt == GroundTruth.from_any(json.loads(s))
    assert GroundTruth.from_any(s.encode()) == gt
    assert GroundTruth.from_any(gt) is gt
    assert json.loads(s)["version"] == 1


BAD = [
    ("not json {", "not valid JSON"),
    ("[1, 2]", "expected a JSON object or its string"),
    ({"activated": [], "image_size": [1, 1], "family": "qwen2_vl"}, "ground_truth.label"),
    ({"label": "bored", "activated": [], "image_size": [1, 1], "family": "qwen2_vl"}, "label"),
    ({"label": "fear", "image_size": [1, 1], "family": "qwen2_vl"}, "ground_truth.activated"),
    ({"label": "fear", "activated": {}, "image_size": [1, 1], "family": "qwen2_vl"}, "activated"),
    (
        {
            "label": "fear",
            "activated": [{"au": 1, "prob": 0.5}],
            "image_size": [9, 9],
            "family": "qwen2_vl",
        },
        "ground_truth.activated[0]: missing box",
    ),
    (
        {
            "label": "fear",
            "activated": [{"au": 1, "prob": 0.5, "box": [0, 0, "x", 1]}],
            "image_size": [9, 9],
            "family": "qwen2_vl",
        },
        "ground_truth.activated[0].box",
    ),
    (
        {
            "label": "fear",
            "activated": [{"au": 1, "prob": 0.5, "box": [0, 0, float("nan"), 1]}],
            "image_size": [9, 9],
            "family": "qwen2_vl",
        },
        "ground_truth.activated[0].box",
    ),
    (
        {
            "label": "fear",
            "activated": [{"au": 1, "prob": 1.5, "box": [0, 0, 1, 1]}],
            "image_size": [9, 9],
            "family": "qwen2_vl",
        },
        "ground_truth.activated[0].prob",
    ),
    (
        {
            "label": "fear",
            "activated": [{"au": "AU1", "prob": 1, "box": [0, 0, 1, 1]}],
            "image_size": [9, 9],
            "family": "qwen2_vl",
        },
        "ground_truth.activated[0].au",
    ),
    (
        {"label": "fear", "activated": [], "image_size": [0, 9], "family": "qwen2_vl"},
        "ground_truth.image_size",
    ),
    (
        {"label": "fear", "activated": [], "image_size": [9], "family": "qwen2_vl"},
        "ground_truth.image_size",
    ),
    (
        {"label": "fear", "activated": [], "image_size": [9, 9], "family": "llava"},
        "ground_truth.family",
    ),
    ({"label": "fear", "activated": [], "image_size": [9, 9]}, "ground_truth.family"),
    (
        {
            "label": "fear",
            "activated": [],
            "image_size": [9, 9],
            "family": "qwen2_5_vl",
            "max_pixels": -4,
        },
        "ground_truth.max_pixels",
    ),
    (
        {
            "label": "fear",
            "activated": [],
            "image_size": [9, 9],
            "family": "qwen2_5_vl",
            "min_pixels": 10,
            "max_pixels": 5,
        },
        "ground_truth.min_pixels",
    ),
    (
        {
            "label": "fear",
            "activated": [],
            "image_size": [9, 9],
            "family": "qwen2_vl",
            "labels": "rafdb",
        },
        "ground_truth.labels",
    ),
    (
        {"label": "fear", "activated": [], "image_size": [9, 9], "family": "qwen2_vl", "lable": 1},
        "unknown fields ['lable']",
    ),
    (
        {
            "label": "fear",
            "activated": [],
            "image_size": [9, 9],
            "family": "qwen2_vl",
            "version": 2,
        },
        "ground_truth.version",
    ),
]


@pytest.mark.parametrize(("gt", "message"), BAD)
def test_a_malformed_ground_truth_names_the_field(gt, message):
    good = make_rows(1)[1][0].to_json()
    text = make_rows(1)[0][0]
    raw = gt if isinstance(gt, str) else json.dumps(gt) if not isinstance(gt, dict) else gt
    calls = [
        lambda: GroundTruth.from_any(raw),
        lambda: verl.compute_score("tag", text, raw),
        lambda: verl.compute_score_batch(["tag"] * 2, [text] * 2, [good, raw], [None, None]),
        lambda: easyr1.compute_score(
            [{"response": text, "response_length": 9, "ground_truth": raw}]
        ),
        lambda: openrlhf.reward_func([text], [""], [raw]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            call()


def test_the_batch_error_names_the_row():
    good = make_rows(1)[1][0].to_json()
    with pytest.raises(ValueError, match=r"row 1: ground_truth\.label"):
        bad = '{"label": 3, "activated": [], "image_size": [1, 1], "family": "qwen2_vl"}'
        verl.compute_score_batch(None, ["a", "b"], [good, bad])


# ------------------------------------------------------------- identical to tag_train.rewards


def _check_same(got_total, got_parts, texts, gts, weights=(1.0, 1.0, 1.0)):
    fmt, ans, grd = reference(texts, gts)
    np.testing.assert_array_equal(got_parts[0], fmt)
    np.testing.assert_array_equal(got_parts[1], ans)
    np.testing.assert_array_equal(got_parts[2], grd)
    want = weights[0] * fmt + weights[1] * ans + weights[2] * grd
    np.testing.assert_allclose(got_total, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("which", [0, 1])
def test_every_adapter_gives_tag_train_rewards(rows, which):
    texts, gts = rows[which]
    as_json = [g.to_json() for g in gts]
    as_dict = [g.to_dict() for g in gts]
    assert (np.array(reference(texts, gts)[2]) > 0.5).mean() > 0.3  # a real mix of scores

    out = verl.compute_score_batch(["tag"] * len(texts), texts, as_json, [{}] * len(texts))
    parts = [np.array([o[k] for o in out]) for k in ("format", "answer", "grounding")]
    _check_same(np.array([o["score"] for o in out]), parts, texts, gts)

    kw = verl.compute_score_batch(
        data_sources=["tag"] * len(texts),
        solution_strs=texts,
        ground_truths=as_dict,
        extra_infos=None,
    )
    assert kw == out
    assert verl.compute_score(solution_strs=texts, ground_truths=as_json) == out

    one = [
        verl.compute_score("tag", t, g, {"num_turns": None}) for t, g in zip(texts[:60], as_json)
    ]
    assert one == out[:60]

    e = easyr1.compute_score(
        [
            {"response": t, "response_length": len(t), "ground_truth": g}
            for t, g in zip(texts, as_json)
        ]
    )
    parts = [np.array([o[k] for o in e]) for k in ("format", "accuracy", "grounding")]
    _check_same(np.array([o["overall"] for o in e]), parts, texts, gts)
    assert easyr1.REWARD_TYPE == "batch"
    assert (
        easyr1.compute_score(
            {"response": texts[0], "response_length": 1, "ground_truth": as_json[0]}
        )
        == e[0]
    )

    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which emotion?<|im_end|>\n<|im_start|>assistant\n"
    decoded = prompt.replace("<|image_pad|>", "<|image_pad|>" * 7)  # the processor's expansion
    queries = [decoded + t + "<|im_end|>" for t in texts]
    r = openrlhf.reward_func(queries, [prompt] * len(texts), as_json)
    fmt, ans, grd = reference(texts, gts)
    np.testing.assert_allclose(r["rewards"].numpy(), fmt + ans + grd, atol=1e-6)
    assert r["rewards"].dtype.is_floating_point and r["scores"].shape == r["rewards"].shape
    assert r["extra_logs"]["tag/grounding"] == pytest.approx(grd.mean())


def test_weights_from_configure_kwargs_and_extra_info(rows):
    texts, gts = rows[0]
    texts, gts = texts[:50], gts[:50]
    js = [g.to_json() for g in gts]
    fmt, ans, grd = reference(texts, gts)
    configure(weights=[0.5, 2.0, 3.0])
    out = verl.compute_score_batch(None, texts, js)
    np.testing.assert_allclose([o["score"] for o in out], 0.5 * fmt + 2 * ans + 3 * grd)
    # verl's reward_kwargs beat configure(); a row's extra_info beats both, for that row
    extras = [{"grounding_weight": 0.0} if i == 0 else {} for i in range(len(texts))]
    out = verl.compute_score_batch(None, texts, js, extras, answer_weight=1.0)
    want = 0.5 * fmt + 1.0 * ans + 3 * grd
    want[0] = 0.5 * fmt[0] + 1.0 * ans[0]
    np.testing.assert_allclose([o["score"] for o in out], want)
    e = easyr1.compute_score(
        [{"response": t, "response_length": 1, "ground_truth": g} for t, g in zip(texts, js)],
        format_weight=0.0,
    )
    np.testing.assert_allclose([o["overall"] for o in e], 2 * ans + 3 * grd)
    configure()
    assert get_settings().format_weight == 1.0
    with pytest.raises(ValueError, match="unknown settings"):
        configure(weight=1)
    with pytest.raises(ValueError, match="weights"):
        configure(weights=[1, 2])


def test_grounding_options_reach_the_kernel(rows):
    texts, gts = rows[0]
    texts, gts = texts[:80], gts[:80]
    js = [g.to_json() for g in gts]
    _, _, grd = reference(texts, gts, class_aware=False, beta=2.0, empty_value=0.5)
    out = verl.compute_score_batch(None, texts, js, class_aware=False, beta=2.0, empty_value=0.5)
    np.testing.assert_array_equal([o["grounding"] for o in out], grd)


def test_one_parse_and_one_kernel_call_per_group(monkeypatch, rows):
    import tag_kernels.au_reward as au_mod
    import tag_model.grounding as grounding

    calls = {"parse": [], "kernel": []}
    real_parse, real_kernel = grounding.parse_batch, au_mod.au_grounding_reward

    def parse(completions, **kw):
        calls["parse"].append(len(completions))
        return real_parse(completions, **kw)

    def kernel(*a, **kw):
        calls["kernel"].append(a[0].shape[0])
        return real_kernel(*a, **kw)

    monkeypatch.setattr(grounding, "parse_batch", parse)
    monkeypatch.setattr(au_mod, "au_grounding_reward", kernel)
    score_mod._clear_rewards()  # rebuild the reward functions over the counters
    try:
        (ta, ga), (tb, gb) = rows
        verl.compute_score_batch(None, ta, [g.to_json() for g in ga])
        assert calls == {"parse": [len(ta)], "kernel": [len(ta)]}
        calls["parse"].clear(), calls["kernel"].clear()
        # two families (and pixel budgets), interleaved: one call per group
        mixed_t = [t for pair in zip(ta[:100], tb[:100]) for t in pair]
        mixed_g = [g.to_json() for pair in zip(ga[:100], gb[:100]) for g in pair]
        out = verl.compute_score_batch(None, mixed_t, mixed_g)
        assert sorted(calls["parse"]) == [100, 100] and sorted(calls["kernel"]) == [100, 100]
        calls["parse"].clear(), calls["kernel"].clear()
        easyr1.compute_score(
            [
                {"response": t, "response_length": 1, "ground_truth": g}
                for t, g in zip(mixed_t, mixed_g)
            ]
        )
        openrlhf.reward_func(mixed_t, [""] * 200, mixed_g)
        assert sorted(calls["parse"]) == [100] * 4 and len(calls["kernel"]) == 4
    finally:
        score_mod._clear_rewards()
    ref_a = verl.compute_score_batch(None, ta[:100], [g.to_json() for g in ga[:100]])
    assert out[0::2] == ref_a


def test_threads_calling_compute_score_at_once(rows):
    """verl 0.9.1's reward loop runs compute_score in a thread pool: no cross-talk."""
    from concurrent.futures import ThreadPoolExecutor

    (ta, ga), (tb, gb) = rows
    texts = [t for pair in zip(ta, tb) for t in pair]
    gts = [g.to_json() for pair in zip(ga, gb) for g in pair]
    want = verl.compute_score_batch(None, texts, gts)
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            got = list(pool.map(lambda tg: verl.compute_score("tag", *tg, {}), zip(texts, gts)))
            assert got == want


def test_the_pixel_budget_matters():
    """Qwen2.5-VL boxes are in the resized image: the budget in the ground truth is used."""
    texts, gts = make_rows(40, "qwen2_5_vl", seed=5, **QWEN25_BUDGET)
    good = verl.compute_score_batch(None, texts, [g.to_json() for g in gts])
    other = [
        GroundTruth(
            g.label,
            g.activated,
            g.image_size,
            g.family,
            min_pixels=3136,
            max_pixels=3136 * 4,
            labels=g.labels,
        )
        for g in gts
    ]
    bad = verl.compute_score_batch(None, texts, [g.to_json() for g in other])
    assert np.mean([o["grounding"] for o in good]) > np.mean([o["grounding"] for o in bad]) + 0.1


def test_import_no_framework():
    for name in ("verl", "openrlhf", "easyr1", "ray", "vllm"):
        assert name not in sys.modules, name


# ------------------------------------------------------------------------------- fuzzing


def fuzz_completions(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    base, _ = make_rows(64, seed=seed + 7)
    pieces = [
        "Global analysis:",
        "Verification loop:",
        "Final conclusion:",
        "Inspect",
        "→",
        "AU12",
        "AU",
        "AU999999999999",
        "<bbox>",
        "</bbox>",
        "[",
        "]",
        ",",
        "<answer>",
        "</answer>",
        "happiness",
        "nan",
        "inf",
        "-inf",
        "1e309",
        "99999999999999999999999999",
        "-5",
        "0.5",
        "\n",
        " ",
        "\x00",
        "é",
        "😀",
        "١٢٣",
        "\u202e",
        "\ud7ff",
        "<|im_end|>",
        "AU 4",
        "AU4AU9",
    ]
    out: list = []
    for i in range(n):
        kind = i % 8
        if kind == 0:  # unicode garbage
            k = int(rng.integers(0, 400))
            out.append(
                "".join(
                    chr(int(c)) for c in rng.integers(1, 0x2FFFF, k) if not 0xD800 <= c < 0xE000
                )
            )
        elif kind == 1:  # truncated real traces
            t = base[int(rng.integers(len(base)))]
            out.append(t[: int(rng.integers(0, len(t) + 1))])
        elif kind == 2:  # token soup of the format's own pieces
            out.append("".join(rng.choice(pieces, int(rng.integers(0, 120)))))
        elif kind == 3:  # real trace, NaN / huge / negative / reversed box numbers
            t = base[int(rng.integers(len(base)))]
            bad = rng.choice(["nan", "inf", "1e40", "99999999999999999999", "-3", "1000000", "0"])
            out.append(
                t.replace("[", f"[{bad},", 1)
                if rng.random() < 0.5
                else t.replace(",", f",{bad}", 1)
            )
        elif kind == 4:  # huge boxes that still parse
            v = int(rng.integers(10**6, 10**15))
            t = render_trace("x", [TraceStep("r", "o", (12,), (0, 0, 9, 9))], [12], "happiness")
            out.append(t.replace("[0,0,9,9]", f"[0,0,{v},{v}]"))
        elif kind == 5:  # many steps (more than max_pairs)
            steps = [TraceStep("r", "o", (int(a),), (1, 1, 50, 50)) for a in rng.choice(AUS, 90)]
            out.append(render_trace("x", steps, [1], "fear"))
        elif kind == 6:  # not a string at all
            out.append(
                [
                    None,
                    b"\xff\xfe<answer>fear</answer>",
                    [{"role": "assistant", "content": base[0]}],
                    12,
                    "",
                    {"a": 1},
                ][i % 6]
            )
        else:  # duplicated answers, nested tags, very long lines
            t = base[int(rng.integers(len(base)))]
            out.append(
                t + t
                if rng.random() < 0.5
                else t.replace("<answer>", "<answer><answer>") + "x" * 5000
            )
    return out


@pytest.fixture(scope="module")
def fuzz():
    texts = fuzz_completions(10_000)
    _, gts = make_rows(10_000, seed=11)
    # odd but valid ground truths too: tiny and huge images, empty lists
    gts = [
        GroundTruth(
            g.label,
            g.activated if i % 5 else [],
            (1, 1) if i % 7 == 0 else (1e6, 3) if i % 11 == 0 else g.image_size,
            g.family,
            labels=g.labels,
        )
        for i, g in enumerate(gts)
    ]
    return texts, [g.to_json() for g in gts]


def _check_range(values, hi):
    v = np.asarray(values, dtype=np.float64)
    assert v.shape == (10_000,)
    assert not np.isnan(v).any()
    assert (v >= 0).all() and (v <= hi + 1e-9).all(), (v.min(), v.max())


def test_fuzz_verl_batch(fuzz):
    texts, gts = fuzz
    out = verl.compute_score_batch(["tag"] * len(texts), texts, gts, [{}] * len(texts))
    for k in ("format", "answer", "grounding"):
        _check_range([o[k] for o in out], 1.0)
    _check_range([o["score"] for o in out], 3.0)
    assert all(isinstance(v, float) for o in out for v in o.values())


def test_fuzz_verl_per_response(fuzz):
    texts, gts = fuzz
    out = [verl.compute_score("tag", t, g, {}) for t, g in zip(texts, gts)]
    _check_range([o["score"] for o in out], 3.0)
    _check_range([o["grounding"] for o in out], 1.0)
    batch = verl.compute_score_batch(None, texts, gts)
    assert out == batch  # per response and per batch agree on garbage as well


def test_fuzz_easyr1(fuzz):
    texts, gts = fuzz
    out = easyr1.compute_score(
        [{"response": t, "response_length": 1, "ground_truth": g} for t, g in zip(texts, gts)]
    )
    for k in ("format", "accuracy", "grounding"):
        _check_range([o[k] for o in out], 1.0)
    _check_range([o["overall"] for o in out], 3.0)


def test_fuzz_openrlhf(fuzz):
    texts, gts = fuzz
    prompts = ["<|im_start|>assistant\n"] * len(texts)
    queries = [p + (t if isinstance(t, str) else str(t)) for p, t in zip(prompts, texts)]
    r = openrlhf.reward_func(queries, prompts, gts)
    _check_range(r["rewards"].numpy(), 3.0)
    assert all(math.isfinite(v) for v in r["extra_logs"].values())


def test_fuzz_scores_something(fuzz):
    """The fuzz set is not all zeros: real traces in it still score."""
    texts, gts = fuzz
    s = score_batch(texts, gts)
    assert 0.05 < (s.format > 0).mean() < 0.9
    assert (s.grounding > 0).sum() > 10  # texts and ground truths are unrelated rows


def test_openrlhf_response_text():
    rt = openrlhf.response_text
    p = "<|im_start|>user\n<|image_pad|>Q<|im_end|>\n<|im_start|>assistant\n"
    assert rt(p + "A<|im_end|>", p) == "A"
    assert (
        rt(p.replace("<|image_pad|>", "<|image_pad|>" * 5) + "A<|im_end|><|endoftext|>", p) == "A"
    )
    assert rt("no prompt here", "something else entirely") == "no prompt here"
    assert rt(None, None) == ""
