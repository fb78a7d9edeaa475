"""``tag-eval run`` takes the prompt style and labels from a checkpoint's ``tag_settings.json``
where none is given, and accepts LoRA adapter folders as models."""

from __future__ import annotations

import json

import pytest
from tag_eval import EvalModelError
from tag_eval._generate import check_model_ref
from tag_eval.run import RunConfig, load_eval_dataset, run_eval

from ._fixtures import OracleGenerator, synth_rafdb_root

backbones = pytest.importorskip("tag_model.backbones")
if not hasattr(backbones, "load_tag_settings"):
    pytest.skip("this tag-model has no checkpoint settings", allow_module_level=True)


@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory):
    return synth_rafdb_root(tmp_path_factory)


def _ckpt(tmp_path, **kw):
    from tag_model.au import RAFDB
    from tag_model.backbones import TagSettings, save_tag_settings

    d = tmp_path / "ckpt"
    labels = kw.pop("labels", RAFDB.names)
    save_tag_settings(d, TagSettings.for_family("qwen2_vl", labels, **kw))
    return d


def _cfg(model, root, out, **kw) -> RunConfig:
    base = dict(
        model_name_or_path=str(model),
        dataset="rafdb",
        data_root=str(root),
        output_dir=str(out),
        per_device_eval_batch_size=3,
        limit=3,
        n_boot=50,
    )
    return RunConfig(**{**base, **kw})


def test_prompt_style_comes_from_the_checkpoint(rafdb_root, tmp_path):
    ds, _ = load_eval_dataset("rafdb", rafdb_root, "test")
    ckpt = _ckpt(tmp_path, label_space="rafdb", prompt_style="compact")
    prompts = []

    class Spy(OracleGenerator):
        def generate(self, images, messages):
            prompts.extend(m[-1]["content"][-1]["text"] for m in map(messages, images))
            return super().generate(images, messages)

    run_eval(_cfg(ckpt, rafdb_root, tmp_path / "a"), generator=Spy(ds))
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    assert meta["prompt"] == "compact"
    assert meta["checkpoint_settings"]["prompt_style"] == "compact"
    compact = prompts[0]
    # a prompt style given on the command line wins
    prompts.clear()
    run_eval(_cfg(ckpt, rafdb_root, tmp_path / "b", prompt_style="full"), generator=Spy(ds))
    assert json.loads((tmp_path / "b" / "run.json").read_text())["prompt"] == "full"
    assert len(prompts[0]) > len(compact)  # the full instruction spells the format out


def test_folder_labels_come_from_the_checkpoint(tmp_path):
    from tag_model.synth import SynthFACS

    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    SynthFACS(size=64, seed=0).sample(0).image.save(root / "happy" / "a.png")
    ckpt = _ckpt(tmp_path, label_space="rafdb")

    class Fixed:
        def __init__(self):
            from tag_model.backbones import get_adapter

            self.adapter, self.family, self.name = get_adapter("qwen2_vl"), "qwen2_vl", "f"

        def generate(self, images, messages):
            from tag_eval._generate import Generation

            return [Generation("<answer> happiness </answer>", 1, 1, 0.01, 1) for _ in images]

    m = run_eval(_cfg(ckpt, root, tmp_path / "r", dataset="folder", split=""), generator=Fixed())
    assert m["label_space"]["name"] == "rafdb"  # not the eight canonical classes
    # an explicit label list when the checkpoint names no label space
    ckpt2 = _ckpt(tmp_path / "2", labels=("happiness", "neutral"), label_space=None)
    m = run_eval(_cfg(ckpt2, root, tmp_path / "s", dataset="folder", split=""), generator=Fixed())
    assert m["label_space"]["names"] == ["happiness", "neutral"]


def test_adapter_folders_are_models(tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "org/base"}')
    assert check_model_ref(str(adapter)) == str(adapter)
    with pytest.raises(EvalModelError, match="--engine vllm needs a full checkpoint"):
        check_model_ref(str(adapter), engine="vllm")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    with pytest.raises(EvalModelError, match=r"config\.json but no weights"):
        check_model_ref(str(half))


def test_bad_settings_file_is_a_model_error(rafdb_root, tmp_path):
    ds, _ = load_eval_dataset("rafdb", rafdb_root, "test")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "tag_settings.json").write_text("{not json")
    with pytest.raises(EvalModelError, match=r"tag_settings\.json"):
        run_eval(_cfg(ckpt, rafdb_root, tmp_path / "o"), generator=OracleGenerator(ds))
