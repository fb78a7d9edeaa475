"""The researcher's chain for the tiling families, each with its tiny offline model.

``traces`` -> ``sft`` (LoRA) -> ``rl`` (format, accuracy and AU-grounding rewards; the
grounding reward converts boxes with the family's adapter) -> ``merge`` -> ``tag-eval run``,
and ``sft`` -> ``rl`` with full weights. InternVL (the family with a native box syntax and
dynamic tiling) runs in the default suite; LLaVA-OneVision, Gemma 3 and SmolVLM run the same
chain under ``-m slow`` (their fixture parameters carry the mark, so every test does).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from tag_model.au import RAFDB

from tests.e2e.test_chain import CPU

FAMILIES = [
    "internvl",
    pytest.param("llava_onevision", marks=pytest.mark.slow),
    pytest.param("gemma3", marks=pytest.mark.slow),
    pytest.param("smolvlm", marks=pytest.mark.slow),
]
MODEL_CLASS = {
    "internvl": "InternVLForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}


def _cli(args: list) -> None:
    from tag_train.cli import main

    assert main([str(a) for a in args]) == 0


def _settings(folder: Path) -> dict:
    from tag_model.backbones import load_tag_settings

    found = load_tag_settings(folder)
    assert found is not None, f"no tag_settings.json in {folder}"
    d = found.to_dict()
    d.pop("version")
    return d


def _expected(family: str) -> dict:
    return {
        "family": family,
        "coord_space": "relative_1000",
        "label_space": "rafdb",
        "labels": list(RAFDB.names),
        "prompt_style": "compact",
        "detector": "geometric",
    }


@pytest.fixture(scope="module", params=FAMILIES)
def chain(request, tmp_path_factory) -> dict:
    """The LoRA chain of one family: base, traces, sft adapter, rl adapter, merged folder."""
    from tag_model.backbones import make_tiny_vlm

    t0 = time.perf_counter()
    family = request.param
    root = tmp_path_factory.mktemp(f"chain-{family}")
    base = root / "base"
    make_tiny_vlm(
        family,
        save_dir=base,
        text_hidden=64,
        text_layers=2,
        text_heads=2,
        text_kv_heads=1,
        text_intermediate=128,
        vision_depth=1,
        vision_width=32,
        vision_heads=2,
    )
    traces = root / "traces"
    _cli(
        ["traces", "--dataset", "synth", "--data_root", root / "synth", "--synth_n", 12,
         "--split", "train", "--output_dir", traces, "--family", family, "--label_space",
         "rafdb", "--prompt_style", "compact", "--min_face_px", 32, "--use_dlib", "false",
         "--progress", "false"]
    )  # fmt: skip
    sft, rl, merged = root / "sft-lora", root / "rl-lora", root / "merged"
    _cli(
        ["sft", "--model_name_or_path", base, "--dataset_path", traces, "--output_dir", sft,
         "--use_peft", "true", "--lora_r", 4, "--lora_alpha", 8, "--max_steps", 1,
         "--save_steps", 1, "--per_device_train_batch_size", 2, "--learning_rate", "1e-3",
         *CPU]
    )  # fmt: skip
    _cli(
        ["rl", "--model_name_or_path", sft, "--dataset_path", traces, "--output_dir", rl,
         "--max_steps", 1, "--save_steps", 1, "--per_device_train_batch_size", 2,
         "--num_generations", 2, "--max_completion_length", 12, "--learning_rate", "1e-3",
         *CPU]
    )  # fmt: skip
    _cli(["merge", "--adapter", rl, "--output_dir", merged])
    print(f"chain {family}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return {
        "family": family, "root": root, "base": base, "traces": traces, "sft": sft,
        "rl": rl, "merged": merged,
    }  # fmt: skip


def test_lora_chain_keeps_the_family(chain: dict) -> None:
    from tag_model.backbones import checkpoint_kind

    fam = chain["family"]
    assert _settings(chain["traces"]) == _expected(fam)
    assert checkpoint_kind(chain["sft"]) == checkpoint_kind(chain["rl"]) == "adapter"
    for key in ("sft", "rl", "merged"):
        assert _settings(chain[key]) == _expected(fam), key
    cfg = json.loads((chain["rl"] / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]).resolve() == chain["base"].resolve()
    assert checkpoint_kind(chain["merged"]) == "full"
    assert json.loads((chain["merged"] / "config.json").read_text())["model_type"] == fam
    # the RL step logged all three rewards
    rows = [
        json.loads(line)
        for line in (chain["rl"] / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    keys = set().union(*rows)
    for name in ("format_reward", "answer_reward", "grounding_reward"):
        assert f"rewards/{name}/mean" in keys, (name, sorted(keys))


def test_traces_write_boxes_in_the_family_space(chain: dict) -> None:
    """Trace boxes are 0-1000 relative and convert back onto the faces with the adapter."""
    from datasets import load_from_disk
    from tag_model.backbones import get_adapter
    from tag_model.grounding import parse_trace

    ds = load_from_disk(str(chain["traces"]))
    ad = get_adapter(chain["family"])
    n_boxes = 0
    for row in ds.select(range(min(4, len(ds)))):
        parsed = parse_trace(row["trace"], labels=RAFDB.names)
        assert parsed.format_ok, parsed.errors
        w, h = row["image"].size
        for _, box in parsed.pairs():
            assert all(0 <= v <= 1000 for v in box)
            x1, y1, x2, y2 = ad.to_pixels(box, (w, h)).tolist()
            assert 0 <= x1 < x2 <= w + 1 and 0 <= y1 < y2 <= h + 1
            n_boxes += 1
    assert n_boxes > 0


def test_grounding_reward_reads_the_family_boxes(chain: dict) -> None:
    """The RL grounding reward with this family's adapter: a box in the family's own syntax
    on the detector's box scores 1, a box elsewhere 0."""
    from tag_model.backbones import family_spec, load_backbone
    from tag_train.rewards import get_grounding_reward

    fam = chain["family"]
    _, processor, _ = load_backbone(chain["base"])
    reward = get_grounding_reward(fam, labels=RAFDB.names, processor=processor)

    def trace(x1: int, y1: int, x2: int, y2: int) -> str:
        if family_spec(fam).native_box:  # InternVL: its own syntax, unreformatted
            box = f"<ref>lip corners</ref><box>[[{x1}, {y1}, {x2}, {y2}]]</box>"
        else:
            box = f"<bbox>[{x1},{y1},{x2},{y2}]</bbox>"
        return (
            "Global analysis: a broad smile.\nVerification loop:\n"
            f"Inspect lip corners → pulled up → AU12 {box}\n"
            "Final conclusion: AU12 indicates happiness.\n<answer> happiness </answer>"
        )

    act = [{"au": 12, "prob": 0.9, "box": [50.0, 90.0, 150.0, 120.0]}]  # on a 200x150 image
    out = reward(
        [trace(250, 600, 750, 800), trace(0, 0, 100, 100)],
        activated=[act, act],
        image_size=[(200, 150), (200, 150)],
    )
    assert out == [pytest.approx(1.0, abs=1e-5), 0.0]


def test_eval_runs_on_the_chain(chain: dict) -> None:
    """``tag-eval run`` on the merged folder takes the family, prompt and labels from its
    ``tag_settings.json`` and generates with the family's processor."""
    from tag_eval.cli import main as eval_main
    from tag_model.synth import write_rafdb_layout

    faces = chain["root"] / "eval-faces"
    write_rafdb_layout(faces, 10, size=112, seed=99, test_fraction=0.4)
    out = chain["root"] / "eval"
    rc = eval_main(
        ["run", "--model_name_or_path", str(chain["merged"]), "--dataset", "rafdb",
         "--data_root", str(faces), "--split", "test", "--output_dir", str(out),
         "--max_new_tokens", "8", "--per_device_eval_batch_size", "2", "--device", "cpu",
         "--no_progress"]
    )  # fmt: skip
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["prompt"] == "compact"
    assert run["label_space"]["names"] == list(RAFDB.names)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["classification"]["accuracy"] <= 1.0
    n = sum(1 for line in (out / "samples.jsonl").read_text().splitlines() if line.strip())
    assert n == run["n_dataset"] == 4


def test_full_weights_chain(chain: dict) -> None:
    from tag_model.backbones import checkpoint_kind, load_backbone

    root, fam = chain["root"], chain["family"]
    sft, rl = root / "sft-full", root / "rl-full"
    _cli(
        ["sft", "--model_name_or_path", chain["base"], "--dataset_path", chain["traces"],
         "--output_dir", sft, "--max_steps", 1, "--save_steps", 1,
         "--per_device_train_batch_size", 2, "--learning_rate", "1e-3", "--dtype", "float32",
         *CPU]
    )  # fmt: skip
    assert checkpoint_kind(sft) == "full" and _settings(sft) == _expected(fam)
    _cli(
        ["rl", "--model_name_or_path", sft, "--dataset_path", chain["traces"],
         "--output_dir", rl, "--max_steps", 1, "--save_steps", 1,
         "--per_device_train_batch_size", 2, "--num_generations", 2,
         "--max_completion_length", 12, *CPU]
    )  # fmt: skip
    assert checkpoint_kind(rl) == "full" and _settings(rl) == _expected(fam)
    model, _, adapter = load_backbone(rl)
    assert type(model).__name__ == MODEL_CLASS[fam] and adapter.family == fam
