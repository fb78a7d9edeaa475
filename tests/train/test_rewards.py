"""TAG reward functions: format, answer, grounding (batched, adapter-converted, never raising)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tag_model.activation import pack_activated
from tag_model.backbones import get_adapter
from tag_model.grounding import TraceStep, render_trace
from tag_train.rewards import (
    RewardTimer,
    get_answer_reward,
    get_format_reward,
    get_grounding_reward,
    get_tag_rewards,
)

LABELS = ("happiness", "sadness", "surprise", "anger")
W, H = 200, 160


def _trace(steps, answer="happiness"):
    aus = sorted({a for s in steps for a in s.aus})
    return render_trace("A face.", steps, aus, answer)


def _act(*entries):
    return [{"au": au, "prob": p, "box": list(b)} for au, p, b in entries]


def test_grounding_perfect_partial_and_wrong_au():
    ad = get_adapter("qwen2_vl")
    box12 = (40.0, 100.0, 160.0, 140.0)
    box6 = (30.0, 60.0, 170.0, 95.0)
    m12 = tuple(np.round(ad.from_pixels(np.array(box12), (W, H))).tolist())
    m6 = tuple(np.round(ad.from_pixels(np.array(box6), (W, H))).tolist())
    act = _act((12, 0.9, box12), (6, 0.6, box6))
    perfect = _trace(
        [TraceStep("lip corners", "pulled up", (12,), m12), TraceStep("cheeks", "raised", (6,), m6)]
    )
    half = _trace([TraceStep("lip corners", "pulled up", (12,), m12)])
    wrong_au = _trace([TraceStep("lip corners", "pulled up", (4,), m12)])
    f = get_grounding_reward("qwen2_vl", labels=LABELS)
    r = f([perfect, half, wrong_au], activated=[act] * 3, image_size=[(W, H)] * 3)
    assert r[0] == pytest.approx(1.0, abs=2e-2)
    # half: precision 1, recall 0.9/1.5 = 0.6 -> F1 = 0.75
    assert r[1] == pytest.approx(0.75, abs=2e-2)
    assert r[2] == 0.0  # class-aware: AU4 matches nothing
    agn = get_grounding_reward("qwen2_vl", labels=LABELS, class_aware=False)
    assert agn([wrong_au], activated=[act], image_size=[(W, H)])[0] > 0.5


def test_grounding_uses_the_adapter_for_qwen2_5_vl():
    """Qwen2.5-VL writes pixels of the resized input: same box, different numbers."""
    size = (640, 480)
    box = (100.0, 200.0, 300.0, 330.0)
    ad = get_adapter("qwen2_5_vl")
    m = tuple(np.round(ad.from_pixels(np.array(box), size)).tolist())
    text = _trace([TraceStep("mouth", "open", (26,), m)], "surprise")
    f = get_grounding_reward("qwen2_5_vl", labels=LABELS)
    from PIL import Image

    img = Image.new("RGB", size)
    r = f([text], activated=[_act((26, 1.0, box))], image=[img])
    assert r[0] == pytest.approx(1.0, abs=2e-2)
    # read as Qwen2-VL 0-1000 coordinates, the same text lands elsewhere
    r2 = get_grounding_reward("qwen2_vl", labels=LABELS)(
        [text], activated=[_act((26, 1.0, box))], image=[img]
    )
    assert r2[0] < 0.9


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage ☃ <answer>",
        "Global analysis: x\nVerification loop:\nInspect a → b → AU12 <bbox>[nan,1,2,3]</bbox>",
        "Global analysis: x\nVerification loop:\nInspect a → b → AU12 <bbox>[9e99,1,2,3]</bbox>\nFinal conclusion: x\n<answer> happiness </answer>",
        "<answer> happiness </answer><answer> sadness </answer>",
        "A" * 50_000,
    ],
)
def test_unparseable_completions_get_zero_never_raise(bad):
    act = _act((12, 0.9, (10.0, 10.0, 50.0, 50.0)))
    for f in get_tag_rewards("qwen2_vl", labels=LABELS):
        out = f([bad], activated=[act], image_size=[(W, H)], label=["happiness"])
        assert out == [0.0]
        assert all(math.isfinite(v) for v in out)


def test_conversational_completions_and_logging():
    ad = get_adapter("qwen2_vl")
    box = (40.0, 100.0, 160.0, 140.0)
    m = tuple(np.round(ad.from_pixels(np.array(box), (W, H))).tolist())
    good = _trace([TraceStep("lip corners", "up", (12,), m)])
    comps = [[{"role": "assistant", "content": good}], [{"role": "assistant", "content": "nope"}]]
    logged: dict[str, list[float]] = {}

    def log_metric(name, value):
        logged.setdefault(name, []).append(value)

    timer = RewardTimer()
    fmt, ans, grd = get_tag_rewards("qwen2_vl", labels=LABELS, timer=timer)
    kw = dict(
        activated=[_act((12, 1.0, box))] * 2,
        image_size=[(W, H)] * 2,
        label=["happiness", "happiness"],
        log_metric=log_metric,
    )
    assert fmt(comps, **kw) == [1.0, 0.0]
    assert ans(comps, **kw) == [1.0, 0.0]
    g = grd(comps, **kw)
    assert g[0] > 0.95 and g[1] == 0.0
    assert logged["grounding/parse_failure_rate"] == [0.5]
    assert logged["format/failure_rate"] == [0.5]
    assert logged["answer/accuracy"] == [0.5]
    assert timer.calls == 3 and timer.seconds > 0
    assert [f.__name__ for f in (fmt, ans, grd)] == [
        "format_reward",
        "answer_reward",
        "grounding_reward",
    ]


def test_answer_reward_synonyms_and_wrong_label():
    text = _trace([TraceStep("lip corners", "up", (12,), (1, 2, 30, 40))], "happiness")
    f = get_answer_reward(LABELS)
    assert f([text, text], label=["happiness", "sadness"]) == [1.0, 0.0]
    assert get_format_reward(LABELS)([text]) == [1.0]


def test_empty_reference_and_padding():
    text = _trace([TraceStep("lip corners", "up", (12,), (100, 600, 800, 900))])
    f = get_grounding_reward("qwen2_vl", labels=LABELS, empty_value=1.0)
    out = f(
        [text, text],
        activated=[[], _act((12, 1.0, (20.0, 96.0, 160.0, 144.0)))],
        image_size=[(W, H)] * 2,
    )
    assert out[0] == 0.0  # hallucinated box against an empty detector set
    assert 0.0 < out[1] <= 1.0
    boxes, aus, probs = pack_activated([[], _act((12, 0.5, (1, 2, 3, 4)), (6, 0.7, (0, 0, 5, 5)))])
    assert boxes.shape == (2, 2, 4) and aus.tolist() == [[-1, -1], [12, 6]]
    assert probs.dtype == np.float32


def test_batched_matches_per_sample_scoring():
    """The one-call batch equals scoring each completion alone (no cross-row leakage)."""
    rng = np.random.default_rng(0)
    ad = get_adapter("qwen2_vl")
    texts, acts, sizes = [], [], []
    for _i in range(40):
        w, h = int(rng.integers(64, 400)), int(rng.integers(64, 400))
        entries, steps = [], []
        for au in rng.choice(
            [1, 2, 4, 6, 12, 15, 25, 26], size=int(rng.integers(0, 4)), replace=False
        ):
            x1, y1 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
            box = (x1, y1, x1 + rng.uniform(5, w * 0.4), y1 + rng.uniform(5, h * 0.4))
            entries.append((int(au), float(rng.uniform(0.5, 1)), box))
            jitter = np.array(box) + rng.normal(0, 4, 4)
            m = np.round(ad.from_pixels(jitter, (w, h))).tolist()
            if m[0] < m[2] and m[1] < m[3] and rng.random() < 0.8:
                steps.append(TraceStep("region", "seen", (int(au),), tuple(m)))
        texts.append(
            _trace(steps or [TraceStep("face", "calm", (), (1, 1, 999, 999))])
            if rng.random() < 0.9
            else "broken"
        )
        acts.append(_act(*entries))
        sizes.append((w, h))
    f = get_grounding_reward("qwen2_vl", labels=LABELS)
    batched = f(texts, activated=acts, image_size=sizes)
    single = [f([t], activated=[a], image_size=[s])[0] for t, a, s in zip(texts, acts, sizes)]
    np.testing.assert_allclose(batched, single, atol=1e-6)
    assert len({round(v, 3) for v in batched}) > 5


def test_grounding_reward_is_finite_on_non_finite_references():
    """NaN/inf in the detector's boxes or probabilities never give a NaN reward."""
    text = _trace([TraceStep("lip corners", "up", (12,), (100, 600, 800, 900))])
    f = get_grounding_reward("qwen2_vl", labels=LABELS)
    nan, inf = float("nan"), float("inf")
    act = [
        _act((12, nan, (20.0, 96.0, 160.0, 144.0))),
        _act((12, 0.9, (nan, 96.0, 160.0, 144.0))),
        _act((12, inf, (20.0, 96.0, inf, 144.0))),
        _act((12, 0.9, (20.0, 96.0, 160.0, 144.0))),
    ]
    out = f([text] * 4, activated=act, image_size=[(W, H)] * 4)
    assert all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in out), out
    assert out[3] > 0.5


# ----------------------------------------------------------------------------- format and answer
GOOD = _trace([TraceStep("cheeks", "raised", (6,), (156, 208, 285, 314))])


def test_format_reward_strings_messages_and_label_space():
    f = get_format_reward()
    conv = [{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]
    bad = GOOD.replace("[156,", "[nan,")
    assert f([GOOD, bad, "", conv], prompts=["p"] * 4, label=["x"] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert f([]) == []
    contempt = GOOD.replace("<answer> happiness", "<answer> contempt")
    assert contempt != GOOD
    assert f([contempt]) == [1.0]
    assert get_format_reward("rafdb")([contempt]) == [0.0]


def test_answer_reward_none_for_rows_without_an_emotion_label():
    f = get_answer_reward()
    sad = GOOD.replace("happiness </", "sad </")
    assert sad != GOOD
    texts = [GOOD, sad, "<answer>happy</answer>", "nothing"]
    assert f(texts, label=["happiness", "sadness", "happy", "happiness"]) == [1.0, 1.0, 0.0, 0.0]
    assert get_answer_reward(require_format=False)(texts[2:3], label=["happy"]) == [1.0]
    assert f(texts[:2], label=[None, "bored"]) == [None, None]
    assert f([[{"role": "assistant", "content": sad}]], label=["sadness"]) == [1.0]
    assert f([GOOD + "<answer>happiness</answer>"], label=["happiness"]) == [0.0]
    with pytest.raises(ValueError, match="labels"):
        f(texts, label=["happiness"])
    logged = {}
    f(texts, label=["happiness", None, "happy", "fear"], log_metric=logged.__setitem__)
    assert logged["answer/accuracy"] == pytest.approx(1 / 3)


def test_multi_message_completions_read_as_their_assistant_turns():
    """A trace split over two assistant messages (with a tool turn between) parses as one:
    the messages are joined by a newline, so no line glues onto another."""
    head, tail = GOOD.split("Final conclusion:")
    conv = [
        {"role": "assistant", "content": head.rstrip("\n")},
        {"role": "tool", "content": "zoomed crop"},
        {"role": "assistant", "content": [{"type": "text", "text": "Final conclusion:" + tail}]},
    ]
    assert get_format_reward()([conv]) == [1.0]
    assert get_answer_reward()([conv], label=["happiness"]) == [1.0]
    act = [[{"au": 6, "prob": 0.9, "box": [31.2, 33.28, 57.0, 50.24]}]]
    g = get_grounding_reward("qwen2_vl")
    assert g([conv], activated=act, image_size=[(W, H)]) == g(
        [GOOD], activated=act, image_size=[(W, H)]
    )


def test_a_row_without_an_image_is_a_clear_error_naming_the_row():
    f = get_grounding_reward("qwen2_vl", labels=LABELS)
    act = _act((12, 0.9, (40.0, 100.0, 160.0, 140.0)))
    text = _trace([TraceStep("lip corners", "pulled up", (12,), (200, 600, 800, 900))])
    img = type("Img", (), {"size": (W, H)})()
    with pytest.raises(ValueError, match="row 1 has no image"):
        f([text] * 2, activated=[act] * 2, image=[img, None])
    with pytest.raises(ValueError, match="row 0 has no image"):
        f([text], activated=[act], images=[[]])  # TRL's "images" column, empty
