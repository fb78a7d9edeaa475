"""GRPO's policy gradient is only as right as its log-probabilities: TRL's per-token log-probs
of a mixed batch (two faces, their completions interleaved) must equal each row scored alone,
with its own image. A batch that paired a completion with another row's pixels (a slicing bug
in ``pixel_values`` / ``image_grid_thw`` / ``mm_token_type_ids``) would push the policy towards
answers for the wrong face. The same check on the demo's SFT model gave agreement to 1e-6."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _score_alone(model, processor, row, completion, temperature):
    """Per-token log-probs of ``completion`` after ``row``'s prompt and image, one row alone."""
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": row["prompt"][0]["content"]}],
        }
    ]
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[text], images=[row["image"]], return_tensors="pt")
    prompt = enc["input_ids"][0]
    ids = torch.cat([prompt, completion])[None]
    mm = torch.cat([enc["mm_token_type_ids"][0], torch.zeros_like(completion)])[None]
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=enc["pixel_values"],
            image_grid_thw=enc["image_grid_thw"],
            mm_token_type_ids=mm,
        ).logits[0]
    n = len(prompt)
    logp = torch.log_softmax(logits[n - 1 : -1].float() / temperature, -1)
    return prompt, logp.gather(1, completion[:, None])[:, 0]


def test_grpo_logprobs_match_each_row_scored_alone(tiny_dir, traces_dir, tmp_path):
    from datasets import load_from_disk
    from tag_model.backbones import load_backbone
    from tag_train._cpu import cpu_args
    from tag_train.rewards import get_tag_rewards
    from tag_train.rl import to_rl_dataset
    from trl import GRPOConfig, GRPOTrainer

    from .conftest import LABELS

    model, processor, _ = load_backbone(str(tiny_dir), family="qwen2_vl")
    ds = to_rl_dataset(load_from_disk(str(traces_dir)))
    temperature = 0.7
    args = cpu_args(
        GRPOConfig,
        output_dir=str(tmp_path / "rl"),
        per_device_train_batch_size=4,
        num_generations=2,
        temperature=temperature,
        max_completion_length=12,
        report_to=[],
        seed=0,
    )
    rewards = get_tag_rewards("qwen2_vl", labels=list(LABELS), processor=processor)
    trainer = GRPOTrainer(
        model=model, reward_funcs=rewards, args=args, train_dataset=ds, processing_class=processor
    )
    rows = [ds[0], ds[3], ds[0], ds[3]]  # two faces, interleaved
    out = trainer._generate_and_score_completions(rows)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        batch_logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            ids,
            mask,
            out["completion_ids"].size(1),
            pixel_values=out.get("pixel_values"),
            image_grid_thw=out.get("image_grid_thw"),
            num_images=out.get("num_images"),
            mm_token_type_ids=out.get("mm_token_type_ids"),
        )
    trainer.model.eval()
    for i, row in enumerate(rows):
        keep = out["completion_mask"][i].bool()
        completion = out["completion_ids"][i][keep]
        assert len(completion) > 0
        prompt, alone = _score_alone(trainer.model, processor, row, completion, temperature)
        assert torch.equal(out["prompt_ids"][i][out["prompt_mask"][i].bool()], prompt)
        got = batch_logps[i][: len(completion)]
        assert torch.allclose(got, alone, atol=1e-4), (i, (got - alone).abs().max())
        # the check can fail: the same completion under the other face's pixels scores differently
        other = rows[(i + 1) % len(rows)]
        _, swapped = _score_alone(
            trainer.model, processor, {**row, "image": other["image"]}, completion, temperature
        )
        assert not torch.allclose(got, swapped, atol=1e-4)
