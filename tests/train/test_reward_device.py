"""The GPU reward path: TRL's ``completion_ids`` parsed and scored with Triton.

Without a GPU the Triton kernels run in the interpreter (``TRITON_INTERPRET=1``, set by the
root ``conftest.py``) on CPU tensors, through the rewards' test hook
``reward_device="cpu-triton"``: the same code as ``"cuda"`` from the padding of the id lists
to the B floats, on another device. It must give exactly what the text path gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tag_model.grounding import TraceStep, render_trace

from .conftest import LABELS, build_tiny, build_trace_dataset

needs_interpreter = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the CPU Triton hook is for machines without CUDA"
)


@pytest.fixture(scope="module")
def processor():
    from tag_model.backbones import make_tiny_vlm

    return make_tiny_vlm("qwen2_vl", text_layers=1, vision_depth=1, vision_width=32)[1]


def _batch(processor) -> dict:
    """TRL-shaped reward kwargs: chat-message completions, their id lists (EOS where the
    model stopped), dataset columns, and TRL's extras."""
    rng = np.random.default_rng(0)
    tok = processor.tokenizer
    texts, acts, labels = [], [], []
    for i in range(12):
        entries, steps = [], []
        for au in rng.choice((4, 6, 7, 9, 12, 25), size=3, replace=False):
            x1, y1 = rng.uniform(5, 60, 2)
            box = [x1, y1, x1 + rng.uniform(10, 40), y1 + rng.uniform(10, 40)]
            entries.append({"au": int(au), "prob": float(rng.uniform(0.5, 1)), "box": box})
            if rng.random() < 0.8:  # qwen2_vl boxes: 0-1000 of the 112-px image, a bit off
                m = np.clip(np.round((np.array(box) + rng.normal(0, 3, 4)) / 112 * 1000), 0, 1000)
                if m[0] < m[2] and m[1] < m[3]:
                    steps.append(TraceStep("the region", "changed", (int(au),), tuple(m.tolist())))
        if not steps:
            steps.append(TraceStep("the face", "calm", (), (10, 10, 990, 990)))
        aus = sorted({a for s in steps for a in s.aus})
        text = render_trace("Muscle activity around the eyes.", steps, aus, LABELS[i % 4])
        if i % 5 == 3:
            text = text[: len(text) // 2]  # truncated at max_completion_length
        if i % 7 == 6:
            text = "I think this face is happy."
        texts.append(text)
        acts.append(entries)
        labels.append(LABELS[(i + i // 4) % len(LABELS)])  # some answers wrong
    ids = []
    for t in texts:
        row = tok(t, add_special_tokens=False)["input_ids"]
        ids.append([*row, tok.eos_token_id] if "</answer>" in t else row)
    image = Image.new("RGB", (112, 112))
    return {
        "prompts": [[{"role": "user", "content": "?"}]] * len(texts),
        "completions": [[{"role": "assistant", "content": t}] for t in texts],
        "completion_ids": ids,
        "label": labels,
        "activated": acts,
        "image": [image] * len(texts),
        "trainer_state": None,
        "log_extra": lambda *a, **k: None,
    }


def _score(rewards, batch: dict) -> tuple[list, dict]:
    logged: dict[str, float] = {}
    kw = {**batch, "completions": list(batch["completions"]), "log_metric": logged.__setitem__}
    return [f(**kw) for f in rewards], logged


@needs_interpreter
def test_token_path_equals_text_path(processor, monkeypatch):
    import tag_kernels.au_reward as au_reward
    import tag_model.grounding._triton as triton_parse
    from tag_train.rewards import get_tag_rewards

    seen = {"parse": 0, "backends": []}
    parse, score = triton_parse.parse_batch_cuda, au_reward.au_grounding_reward

    def spy_parse(ids, *a, **k):
        seen["parse"] += 1
        assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int64
        return parse(ids, *a, **k)

    def spy_score(*a, **k):
        seen["backends"].append(k.get("backend"))
        return score(*a, **k)

    monkeypatch.setattr(triton_parse, "parse_batch_cuda", spy_parse)
    monkeypatch.setattr(au_reward, "au_grounding_reward", spy_score)
    batch = _batch(processor)
    kw = {"labels": LABELS, "processor": processor}
    want, want_log = _score(get_tag_rewards("qwen2_vl", reward_device="cpu", **kw), batch)
    assert seen == {"parse": 0, "backends": [None]}
    got, got_log = _score(get_tag_rewards("qwen2_vl", reward_device="cpu-triton", **kw), batch)
    assert seen == {"parse": 1, "backends": [None, "triton"]}  # one parse for all three
    for name, g, w in zip(("format", "answer", "grounding"), got, want, strict=True):
        assert len(g) == len(w) == len(batch["completions"])
        np.testing.assert_allclose(
            np.array(g, dtype=float), np.array(w, dtype=float), atol=1e-6, err_msg=name
        )
    assert got_log.keys() == want_log.keys()
    for k in want_log:
        assert got_log[k] == pytest.approx(want_log[k], abs=1e-6), k
    fmt, ans, grd = want
    assert 0 < sum(fmt) < len(fmt) and 0 < sum(ans) < sum(fmt)  # not a trivial batch
    assert any(0 < r < 1 for r in grd) and any(r == 0 for r in grd)


@pytest.mark.slow  # ~3 min: the Triton interpreter in a GRPO step (run with -m slow)
@needs_interpreter
def test_tiny_grpo_run_scores_trl_completion_ids_on_the_token_path(
    synth_ds, tmp_path, monkeypatch, capsys
):
    """A GRPO step with ``reward_device="cpu-triton"``: every call TRL makes (and the warm-up)
    is also scored on the text path with the same kwargs, and must agree."""
    import tag_train.rl as rl
    from tag_train._args import RLScriptArguments
    from trl import GRPOConfig

    calls = []
    make = rl.get_tag_rewards

    def checked(*a, **k):
        assert k["reward_device"] == "cpu-triton"
        tokens = make(*a, **k)
        texts = make(*a, **{**k, "reward_device": "cpu", "timer": None})

        def both(f, g):
            def reward(**kw):
                got = f(**kw)
                want = g(**{**kw, "completions": list(kw["completions"]), "log_metric": None})
                calls.append((type(kw["completion_ids"][0]), got, want))
                return got

            reward.__name__ = f.__name__
            return reward

        return [both(f, g) for f, g in zip(tokens, texts, strict=True)]

    monkeypatch.setattr(rl, "get_tag_rewards", checked)
    tiny = build_tiny(tmp_path / "tiny")
    traces = build_trace_dataset(synth_ds, tmp_path / "traces")
    script = RLScriptArguments(
        model_name_or_path=str(tiny), dataset_path=str(traces), reward_device="cpu-triton"
    )
    cfg = GRPOConfig(
        output_dir=str(tmp_path / "rl"), max_steps=1, per_device_train_batch_size=4,
        num_generations=2, max_completion_length=16, bf16=False, report_to="none",
        logging_steps=1, save_strategy="no",
    )  # fmt: skip
    rl.run_rl(script, cfg)
    assert "tag-train rl: rewards on cpu-triton (as asked)" in capsys.readouterr().out
    assert len(calls) == 2 * 3  # the warm-up batch and one GRPO step, three rewards each
    for kind, got, want in calls:
        assert kind is list  # TRL 1.16 hands over Python lists
        np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float))
    warm = [got for _, got, _ in calls[:3]]
    assert warm[0][1] == 1.0 and 0 < warm[2][1] <= 1  # the warm-up's traces parse and score


def test_auto_is_the_text_path_without_cuda(processor):
    from tag_train.rewards import get_tag_rewards
    from tag_train.rl import pick_reward_device

    def make(device, timer):
        raise AssertionError("auto must not build rewards to time without CUDA")

    if torch.cuda.is_available():
        pytest.skip("on CUDA auto times both paths")
    device, why = pick_reward_device("auto", make, {"completion_ids": [[1]]})
    assert (device, why) == ("cpu", "auto: no CUDA device, the completions' text with Numba")
    assert pick_reward_device("cpu", make, {}) == ("cpu", "as asked")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        get_tag_rewards("qwen2_vl", processor=processor, reward_device="cuda")


def test_reward_device_flag():
    from tag_train._args import RLScriptArguments
    from trl import GRPOConfig, TrlParser

    parser = TrlParser((RLScriptArguments, GRPOConfig))
    base = ["--output_dir", "o", "--bf16", "false"]
    assert parser.parse_args_and_config(base)[0].reward_device == "auto"
    args = parser.parse_args_and_config([*base, "--reward_device", "cuda"])[0]
    assert args.reward_device == "cuda"
    with pytest.raises(SystemExit):
        parser.parse_args_and_config([*base, "--reward_device", "gpu"])


def test_pad_ids_matches_a_per_row_copy():
    from tag_train.rewards import _pad_ids

    class Tok:
        pad_token_id = 7

    rows = [[1, 2, 3], [], [4], [5, 6, 8, 9, 10]]
    ids, lengths = _pad_ids(rows, Tok(), "cpu")
    assert ids.dtype == torch.int64 and lengths.tolist() == [3, 0, 1, 5]
    assert ids.tolist() == [[1, 2, 3, 7, 7], [7] * 5, [4, 7, 7, 7, 7], [5, 6, 8, 9, 10]]
