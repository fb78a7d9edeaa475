"""The local HF VLM teacher (tiny model) and the offline template teacher."""

from __future__ import annotations

import pytest
from PIL import Image
from tag_model.grounding import parse_trace
from tag_train.teachers import ActivatedEntry, HFTeacher, TeacherRequest, TemplateTeacher

LABELS = ("happiness", "sadness", "surprise", "anger")
ACT = (
    ActivatedEntry(12, 0.95, (30.0, 70.0, 80.0, 90.0), (268, 625, 714, 804)),
    ActivatedEntry(6, 0.70, (25.0, 45.0, 85.0, 60.0), (223, 402, 759, 536)),
    ActivatedEntry(25, 0.60, (30.0, 70.0, 80.0, 90.0), (268, 625, 714, 804)),
)


def _req(i=0, attempt=0, eliminated=(), label="happiness", act=ACT):
    return TeacherRequest(
        sample_id=f"s{i}", image=Image.new("RGB", (112, 112), (120, 90, 80)), labels=LABELS,
        activated=act, system="sys", user="user", eliminated=eliminated, attempt=attempt, label=label,
        face_box=(100, 100, 900, 950),
    )  # fmt: skip


def test_hf_teacher_generates_with_the_tiny_vlm():
    from tag_model.backbones import make_tiny_vlm

    model, processor = make_tiny_vlm("qwen2_vl", text_layers=1, vision_depth=1)
    t = HFTeacher(model, processor, max_new_tokens=8, do_sample=False, batch_size=2)
    replies = t.generate([_req(0), _req(1), _req(2)])
    assert len(replies) == 3
    for r in replies:
        assert isinstance(r.text, str) and "error" not in r.meta, r.meta
        assert 0 < r.meta["completion_tokens"] <= 8
        parse_trace(r.text, labels=LABELS)  # garbage from random weights is a valid input


def test_template_traces_parse_and_ground_every_au():
    t = TemplateTeacher(seed=0)
    p = parse_trace(t.write(_req()), labels=LABELS)
    assert p.format_ok and p.answer == "happiness"
    # AU12 and AU25 share one box: one step grounds both, as in the authors' "AU4 AU9" step
    assert sorted(a for s in p.steps for a in s.aus) == [6, 12, 25]
    assert any(sorted(s.aus) == [12, 25] for s in p.steps)
    assert [tuple(s.box) for s in p.steps if 6 in s.aus] == [(223.0, 402.0, 759.0, 536.0)]


def test_template_wording_varies_and_is_deterministic():
    t = TemplateTeacher(seed=0)
    texts = {t.write(_req(i)) for i in range(12)}
    assert len(texts) >= 6
    assert t.write(_req(3)) == TemplateTeacher(seed=0).write(_req(3))
    # a retry (the next attempt) is worded anew
    assert sum(t.write(_req(i)) != t.write(_req(i, attempt=1)) for i in range(12)) >= 6
    compact = TemplateTeacher(seed=0, style="compact").write(_req())
    assert len(compact) < len(t.write(_req()))


def test_label_elimination_is_honoured():
    proto = TemplateTeacher(answer="prototype")
    # AU6+AU12 -> happiness by EMFACS; eliminated, it must answer something else
    assert proto.choose_label(_req(label=None)) == "happiness"
    other = proto.choose_label(_req(label=None, eliminated=("happiness",)))
    assert other != "happiness" and other in LABELS
    gold = TemplateTeacher(answer="label")
    assert gold.choose_label(_req(label="anger")) == "anger"
    assert gold.choose_label(_req(label="anger", eliminated=("anger",))) != "anger"


def test_no_activated_aus_still_writes_a_valid_trace():
    p = parse_trace(TemplateTeacher().write(_req(act=(), label="sadness")), labels=LABELS)
    assert p.format_ok and p.answer == "sadness"
    assert p.steps[0].aus == [] and p.steps[0].box is not None


def test_hf_teacher_loading_options(tmp_path):
    import torch
    from tag_model.backbones import make_tiny_vlm

    make_tiny_vlm("qwen2_vl", save_dir=tmp_path, text_layers=1, vision_depth=1)
    t = HFTeacher.from_pretrained(
        str(tmp_path), dtype="bfloat16", attn_implementation="eager", max_pixels=56 * 56,
        max_new_tokens=4, do_sample=False,
    )  # fmt: skip
    assert {p.dtype for p in t.model.parameters()} == {torch.bfloat16}
    assert t.model.config._attn_implementation == "eager"
    assert t.processor.image_processor.size["longest_edge"] == 56 * 56
    if not torch.cuda.is_available():  # device_map "auto" only where there is a GPU
        assert {p.device.type for p in t.model.parameters()} == {"cpu"}
    reply = t.generate([_req(0)])[0]
    assert "error" not in reply.meta, reply.meta
    default = HFTeacher.from_pretrained(str(tmp_path), max_new_tokens=4)
    assert {p.dtype for p in default.model.parameters()} == {torch.float32}  # the checkpoint's


def test_hf_teacher_quantization_needs_bitsandbytes_and_cuda(tmp_path):
    import importlib.util

    import pytest
    import torch

    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("bitsandbytes and CUDA are both here")
    with pytest.raises(RuntimeError, match=r"--load_in_4bit.*(bitsandbytes|CUDA)"):
        HFTeacher.from_pretrained(str(tmp_path), load_in_4bit=True)


def test_hf_teacher_in_the_builder_gets_left_padded_batches(synth_ds, tmp_path):
    """A batching teacher (``batch_size > 1``) gets whole batches of ``chunk_size``, one at a
    time (HFTeacher pads them on the left); random-weight garbage is a format rejection (content), never a teacher error."""
    from tag_model.backbones import make_tiny_vlm
    from tag_train.traces import TraceBuildConfig, build_traces

    model, processor = make_tiny_vlm("qwen2_vl", text_layers=1, vision_depth=1)
    t = HFTeacher(model, processor, max_new_tokens=4, do_sample=False, batch_size=8)
    sizes = []
    orig = t._batch

    def spy(reqs):
        sizes.append(len(reqs))
        return orig(reqs)

    t._batch = spy
    cfg = TraceBuildConfig(
        family="qwen2_vl", labels=LABELS, min_face_px=32, use_dlib=False, chunk_size=3,
        max_format_retries=0, max_label_retries=0,
    )  # fmt: skip
    s = build_traces(synth_ds.select(range(6)), t, tmp_path / "hf", cfg, progress=False)
    assert sizes == [3, 3]  # min(batch_size, chunk_size) per generate call
    assert s.teacher_error == 0 and s.rejected_format + s.rejected_label + s.kept == 6


@pytest.mark.gpu
def test_hf_teacher_on_the_gpu_device_map_auto_and_dtype(tmp_path):
    import torch
    from tag_model.backbones import make_tiny_vlm

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    make_tiny_vlm("qwen2_vl", save_dir=tmp_path, text_layers=1, vision_depth=1)
    t = HFTeacher.from_pretrained(str(tmp_path), dtype="bfloat16", max_new_tokens=4, batch_size=4)
    assert {p.device.type for p in t.model.parameters()} == {"cuda"}  # device_map="auto"
    assert {p.dtype for p in t.model.parameters()} == {torch.bfloat16}
    replies = t.generate([_req(i) for i in range(5)])  # a batch of 4 (left padded), then 1
    assert all("error" not in r.meta for r in replies), [r.meta for r in replies]


def _surprise_request(i: int = 0):
    """Surprise with AU2 (brows) and AU25 (mouth) active, AU1 (brows) not."""
    act = (
        ActivatedEntry(2, 0.9, (20.0, 20.0, 90.0, 32.0), (180, 180, 800, 290)),
        ActivatedEntry(25, 0.8, (30.0, 70.0, 80.0, 90.0), (268, 625, 714, 804)),
    )
    return _req(i, label="surprise", act=act)


def test_rationalizing_teacher_adds_an_unsupported_prototype_au_in_its_region():
    plain = TemplateTeacher(seed=0, rationalize=0.0)
    always = TemplateTeacher(seed=0, rationalize=1.0)
    p = parse_trace(always.write(_surprise_request()), labels=LABELS)
    assert p.format_ok and p.answer == "surprise"
    brows = next(s for s in p.steps if 2 in s.aus)
    added = set(brows.aus) - {2}
    # one AU of surprise's prototypes that shares the brows' region and is not active: AU1
    assert added == {1}
    assert tuple(brows.box) == (180.0, 180.0, 800.0, 290.0)  # grounded in the brows' box
    text = always.write(_surprise_request())
    conclusion = next(ln for ln in text.splitlines() if ln.startswith("Final conclusion:"))
    assert "AU1 +" in conclusion  # the teacher rationalises it in the conclusion too
    # a face whose expression's prototypes share no region with its active AUs is untouched
    happy = _req(0)  # happiness: AU6, AU12, AU25 all active already
    assert always.write(happy) == plain.write(happy)
    # the draw has its own stream: at 0.5 some traces change, and the wording does not
    half = TemplateTeacher(seed=0, rationalize=0.5)
    changed = [
        half.write(_surprise_request(i)) != plain.write(_surprise_request(i)) for i in range(40)
    ]
    assert 8 <= sum(changed) <= 32
    for i in range(40):
        a, b = half.write(_surprise_request(i)), plain.write(_surprise_request(i))
        assert a.splitlines()[0] == b.splitlines()[0]  # the same global analysis


def test_rationalized_claims_cost_grounding_reward():
    """The added AU is a claim the detector does not see: the reward's precision drops."""
    from tag_train.rewards import get_tag_rewards

    ground = get_tag_rewards("qwen2_vl", labels=list(LABELS))[2]
    req = _surprise_request()
    activated = [{"au": e.au, "prob": e.prob, "box": list(e.box)} for e in req.activated]
    scores = [
        ground(
            completions=[[{"role": "assistant", "content": t.write(req)}]],
            activated=[activated],
            image_size=[(112, 112)],
        )[0]
        for t in (TemplateTeacher(seed=0), TemplateTeacher(seed=0, rationalize=1.0))
    ]
    assert scores[0] > 0.95 and scores[1] < scores[0] - 0.1, scores


def test_rationalize_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="rationalize"):
        TemplateTeacher(rationalize=1.5)
