"""Per-box credit (``tag_train._box_credit``): box spans found in real token ids, the box
advantage's sign and scale, and GRPO running with ``[B, T]`` advantages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

SIZE = (112, 112)
DETECTOR = [
    {"au": 12, "prob": 0.9, "box": [28.0, 67.0, 84.0, 95.0]},
    {"au": 6, "prob": 0.8, "box": [18.0, 24.0, 32.0, 35.0]},
]


@pytest.fixture(scope="module")
def processor():
    from tag_model.backbones import make_tiny_vlm

    return make_tiny_vlm("qwen2_vl", text_layers=1, vision_depth=1, vision_width=32)[1]


def _model_box(px: list[float]) -> tuple[int, ...]:
    return tuple(round(v / s * 1000) for v, s in zip(px, SIZE * 2, strict=True))


def _trace(steps) -> str:
    from tag_model.grounding import render_trace

    return render_trace("A face.", steps, [12], "happiness")


def _ids(processor, text: str) -> list[int]:
    return list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_box_spans_find_every_box_its_aus_and_its_coordinate_tokens(processor):
    from tag_model.grounding import TraceStep, token_bytes
    from tag_train._box_credit import box_spans

    steps = [
        TraceStep("the whole face", "at rest", (), (10, 20, 990, 980)),
        TraceStep("the lip corners", "pulled up", (12, 25), (250, 600, 750, 850)),
        TraceStep("the cheeks", "raised", (6,), (156, 208, 285, 314)),
    ]
    ids = _ids(processor, _trace(steps))
    table = token_bytes(processor.tokenizer)
    spans = box_spans(ids, table)
    assert [s.aus for s in spans] == [(), (12, 25), (6,)]
    assert [s.box for s in spans] == [tuple(float(v) for v in st.box) for st in steps]
    for s, st in zip(spans, steps, strict=True):
        inside = table.decode(ids[s.start : s.end])
        assert inside.replace(" ", "").strip("[]") == ",".join(str(v) for v in st.box)
        assert "bbox" not in inside  # the tags stay with the sequence advantage
    # a native InternVL box counts as <bbox>[...]</bbox>, its tokens found the same way
    native = _ids(
        processor, "Inspect the cheeks -> raised -> AU6 <box>[[156, 208, 285, 314]]</box>"
    )
    (span,) = box_spans(native, table)
    assert (span.aus, span.box) == ((6,), (156.0, 208.0, 285.0, 314.0))
    assert table.decode(native[span.start : span.end]).strip(" []") == "156, 208, 285, 314"
    # a truncated completion: the unfinished box is not a box
    cut = _ids(processor, _trace(steps)[: _trace(steps).rindex("</bbox>") - 3])
    assert [s.aus for s in box_spans(cut, table)] == [(), (12, 25)]


def test_box_advantages_rank_boxes_of_one_region_and_leave_lone_boxes_alone():
    from tag_train._box_credit import box_advantages

    recs = [(0, 0, 0, 0.9), (0, 1, 0, 0.7), (0, 2, 0, 0.5), (0, 3, 1, 0.4), (1, 4, 0, 0.6)]
    adv = box_advantages(recs, weight=2.0)
    assert adv[0] > 0 > adv[2] and adv[1] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(adv[3]) and np.isnan(adv[4])  # alone for its region / in its group
    assert np.std(adv[:3]) == pytest.approx(2.0, rel=1e-3)  # batch-standardised, times weight
    same = box_advantages([(0, 0, 0, 0.5), (0, 1, 0, 0.5)])
    assert same.tolist() == [0.0, 0.0]  # no spread: no push either way


def _two_completions(processor):
    """A group of two: an exact AU12 box plus an AU9 claim the detector does not see, and a
    shifted AU12 box plus an inspection box; as TRL's padded ids and mask."""
    from tag_model.grounding import TraceStep

    good = _model_box(DETECTOR[0]["box"])
    bad = tuple(v + 60 for v in good)
    texts = [
        _trace(
            [
                TraceStep("the lip corners", "pulled up", (12,), good),
                TraceStep("the nose", "wrinkled", (9,), (400, 400, 600, 600)),  # not seen
            ]
        ),
        _trace(
            [
                TraceStep("the lip corners", "pulled up", (12,), bad),
                TraceStep("the whole face", "at rest", (), (0, 0, 1000, 1000)),  # inspection
            ]
        ),
    ]
    rows = [_ids(processor, t) for t in texts]
    width = max(map(len, rows)) + 3
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return rows, ids, mask


def test_credit_boxes_moves_only_the_coordinate_tokens_of_compared_boxes(processor):
    from tag_model.backbones import get_adapter
    from tag_model.grounding import token_bytes
    from tag_train._box_credit import box_spans, credit_boxes

    rows, ids, mask = _two_completions(processor)
    width = ids.shape[1]
    seq = torch.tensor([0.5, -0.5])
    inputs = [{"activated": DETECTOR, "image_size": SIZE}] * 2
    table = token_bytes(processor.tokenizer)
    out, stats = credit_boxes(
        seq,
        ids,
        mask,
        inputs,
        table=table,
        adapter=get_adapter("qwen2_vl", processor=processor),
        num_generations=2,
    )
    assert out.shape == (2, width) and out.dtype == torch.float32
    s0, s1 = box_spans(rows[0], table)[0], box_spans(rows[1], table)[0]
    assert (out[0, s0.start : s0.end] > 0).all()  # the exact box is credited ...
    assert (out[1, s1.start : s1.end] < 0).all()  # ... and the shifted one blamed,
    assert out[0, s0.start] == pytest.approx(-out[1, s1.start])
    moved = torch.zeros_like(mask, dtype=torch.bool)
    moved[0, s0.start : s0.end] = True
    moved[1, s1.start : s1.end] = True
    want = seq.reshape(-1, 1).expand(2, width)
    assert torch.equal(out[~moved], want[~moved])  # every other token keeps GRPO's advantage
    assert stats["compared"] == 1.0 and stats["iou"] > 0.4
    assert stats["token_share"] == pytest.approx(moved.sum().item() / mask.sum().item())
    # no image and no image_size: the rewards' own clear error, naming the row
    no_image = [{"activated": DETECTOR}] * 2
    with pytest.raises(ValueError, match="row 0 has no image"):
        credit_boxes(
            seq,
            ids,
            mask,
            no_image,
            table=table,
            adapter=get_adapter("qwen2_vl"),
            num_generations=2,
        )


def test_rl_with_box_credit_trains_on_token_advantages(tiny_dir, traces_dir, tmp_path):
    from tag_train._args import RLScriptArguments
    from tag_train._box_credit import BoxCreditGRPOTrainer
    from tag_train.rl import run_rl
    from trl import GRPOConfig

    metrics = tmp_path / "m.jsonl"
    script = RLScriptArguments(
        model_name_or_path=str(tiny_dir),
        dataset_path=str(traces_dir),
        box_credit=1.0,
        metrics_file=str(metrics),
    )
    cfg = GRPOConfig(
        output_dir=str(tmp_path / "rl"), max_steps=1, per_device_train_batch_size=4,
        num_generations=2, max_completion_length=12, bf16=False, report_to="none",
        logging_steps=1, save_strategy="no",
    )  # fmt: skip
    trainer = run_rl(script, cfg)
    assert isinstance(trainer, BoxCreditGRPOTrainer)
    logged = json.loads(metrics.read_text().splitlines()[0])
    assert "box_credit/token_share" in logged and np.isfinite(logged["loss"])


def test_claim_credit_rewards_the_aus_the_detector_sees(processor):
    from tag_model.backbones import get_adapter
    from tag_model.grounding import token_bytes
    from tag_train._box_credit import box_spans, credit_boxes

    rows, ids, mask = _two_completions(processor)
    table = token_bytes(processor.tokenizer)
    seq = torch.tensor([0.5, -0.5])
    kw = dict(
        table=table,
        adapter=get_adapter("qwen2_vl", processor=processor),
        num_generations=2,
        weight=0.0,
    )
    inputs = [{"activated": DETECTOR, "image_size": SIZE}] * 2
    out, stats = credit_boxes(seq, ids, mask, inputs, claim_weight=1.0, **kw)
    (au12, a, b), (au9, c, d) = (
        box_spans(rows[0], table)[0].claims + box_spans(rows[0], table)[1].claims
    )
    assert (au12, au9) == (12, 9)
    assert (out[0, a:b] > 0).all() and (out[0, c:d] < 0).all()  # seen up, hallucinated down
    assert stats["claims_seen"] == pytest.approx(2 / 3)
    # weight 0 for both: GRPO's advantage everywhere
    same, _ = credit_boxes(seq, ids, mask, inputs, **kw)
    assert torch.equal(same, seq.reshape(-1, 1).expand_as(same))
