"""TAG's reward functions inside the real verl 0.9.1, in its own environment (slow).

Approach: verl 0.9.1 pins ``transformers>=5.5.3,<5.11`` while the workspace locks 5.24, so
verl cannot join ``uv.lock``. The test builds a throw-away virtual environment in
``tmp_path`` (``uv venv`` + ``uv pip install verl==0.9.1`` with torch, numba, einops and
triton pinned to the workspace's versions, so uv's cache serves them: a few seconds once the
cache is warm; no vLLM, no GPU) and puts the workspace members' ``src/`` folders on
``PYTHONPATH`` instead of installing them (their dependency pins would drag transformers
back to 5.24). ``tag_train.integrations`` imports only ``tag_train.rewards`` and ``tag_model``
pieces that work with transformers 5.10, which this test proves.

In that environment a driver script:

1. tokenizes real TAG completions (the trace dataset's traces, a wrong answer, truncated and
   garbage ones) with the tiny Qwen2.5-VL tokenizer that ``make_tiny_vlm`` trains offline,
   builds a ``verl.DataProto`` (left-padded prompts, right-padded responses, attention mask,
   ``reward_model.ground_truth`` from the exported parquet), and runs verl's legacy
   ``NaiveRewardManager`` (with ``compute_score``) and ``BatchRewardManager`` (with
   ``compute_score_batch``), both loaded by verl's own ``get_custom_reward_fn`` from the
   adapter file's path, and the reward loop's ``NaiveRewardManager.run_single`` (what verl
   0.9.1's trainer runs): the token-level reward tensor must hold TAG's score (computed here,
   in the workspace, by ``tag_train.rewards``) at each response's last valid token and 0
   elsewhere;
2. loads the exported parquet with verl's ``RLHFDataset`` and the tiny processor: the prompt
   becomes an image part plus text, ``process_vision_info`` yields the image and the
   processor expands it into image tokens;
3. composes ``configs/verl_grpo_qwen2_5_vl_7b_rafdb.sh``'s overrides with verl's own hydra
   config (``ppo_trainer``): an override naming no verl key fails.

Measured here (2 shared CPU cores): about 6 minutes, most of it the trace build and imports;
the venv itself takes seconds with a warm uv cache.

Run: ``uv run pytest -q -m slow tests/train/test_integrations_verl.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import _verl_env

pytestmark = pytest.mark.slow

REPO = _verl_env.REPO
LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")

DRIVER = r"""
import asyncio, json, sys
import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import AutoProcessor

import verl
from verl import DataProto
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.reward_manager.batch import BatchRewardManager
from verl.workers.reward_manager.naive import NaiveRewardManager

import tag_train.integrations.verl as tag_verl

job = json.load(open(sys.argv[1]))
processor = AutoProcessor.from_pretrained(job["processor"])
tok = processor.tokenizer
out = {"verl": verl.__version__, "transformers": __import__("transformers").__version__}

# ---- a DataProto of real TAG completions
texts, gts = job["texts"], job["ground_truths"]
prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in job["prompts"]]
resp_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
out["round_trip"] = [tok.decode(r, skip_special_tokens=True) == t for r, t in zip(resp_ids, texts)]
P, R, B = max(map(len, prompt_ids)), max(map(len, resp_ids)) + 3, len(texts)
pad = tok.pad_token_id if tok.pad_token_id is not None else 0
prompts = torch.full((B, P), pad, dtype=torch.long)
responses = torch.full((B, R), pad, dtype=torch.long)
mask = torch.zeros((B, P + R), dtype=torch.long)
for i, (p, r) in enumerate(zip(prompt_ids, resp_ids)):
    prompts[i, P - len(p):] = torch.tensor(p)
    mask[i, P - len(p):P] = 1
    if r:
        responses[i, :len(r)] = torch.tensor(r)
    mask[i, P:P + len(r)] = 1
lengths = [len(r) for r in resp_ids]
data = DataProto.from_dict(
    tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
             "input_ids": torch.cat([prompts, responses], 1)},
    non_tensors={
        "data_source": np.array(["tag/fer"] * B, dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": g} for g in gts], dtype=object),
        "extra_info": np.array([{"index": i} for i in range(B)], dtype=object),
    },
)

def check(name, res):
    t = res["reward_tensor"] if isinstance(res, dict) else res
    last = [float(t[i, n - 1]) for i, n in enumerate(lengths)]
    rest = t.clone()
    for i, n in enumerate(lengths):
        rest[i, n - 1] = 0
    out[name] = {"last": last, "others_zero": bool((rest == 0).all()),
                 "extra": {k: [float(v) for v in vs] for k, vs in res.get("reward_extra_info", {}).items()}
                 if isinstance(res, dict) else {}}

def cfg(name):
    return OmegaConf.create({"reward": {"custom_reward_function": {
        "path": tag_verl.__file__, "name": name, "reward_kwargs": {}}}})

one = get_custom_reward_fn(cfg("compute_score"))
batch = get_custom_reward_fn(cfg("compute_score_batch"))
check("naive", NaiveRewardManager(tok, 0, compute_score=one)(data, return_dict=True))
check("batch", BatchRewardManager(tok, 0, compute_score=batch)(data, return_dict=True))

try:  # verl 0.9.1's trainer: the reward loop, one response at a time
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager as LoopNaive
    loop_mgr = LoopNaive(OmegaConf.create({}), tok, one)
    scores = []
    for i in range(B):
        r = loop_mgr.loop.run_until_complete(loop_mgr.run_single(data[i:i + 1]))
        scores.append(float(r["reward_score"]))
    out["reward_loop"] = scores
except Exception as exc:  # report, the test decides
    out["reward_loop_error"] = repr(exc)

# ---- RLHFDataset on the exported parquet, with the tiny processor
conf = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 4096,
                         "filter_overlong_prompts": False, "cache_dir": job["cache_dir"]})
ds = RLHFDataset(job["parquet"], tok, conf, processor=processor)
row = ds[0]
msgs = row["raw_prompt"]
kinds = [c["type"] for c in msgs[0]["content"]]
images, _ = asyncio.run(RLHFDataset.process_vision_info(msgs, ds.image_patch_size, conf))
text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
enc = processor(text=[text], images=images, return_tensors="pt")
image_token = tok.convert_tokens_to_ids("<|image_pad|>")
out["dataset"] = {
    "len": len(ds), "kinds": kinds, "n_images": len(images), "image_size": list(images[0].size),
    "image_tokens": int((enc["input_ids"] == image_token).sum()),
    "grid": enc["image_grid_thw"].tolist(),
    "ground_truth": row["reward_model"]["ground_truth"], "data_source": row["data_source"],
}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def verl_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return _verl_env.verl_python(tmp_path_factory.mktemp("verl") / "venv")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tag_model.backbones import make_tiny_vlm
    from tag_train.cli import main
    from tag_train.rewards import get_tag_rewards

    root = tmp_path_factory.mktemp("job")
    traces, exported = root / "traces", root / "verl"
    assert (
        main(["traces", "--dataset", "synth", "--synth_n", "12", "--output_dir", str(traces)]) == 0
    )
    assert (
        main(
            [
                "export",
                "--format",
                "verl",
                "--dataset_path",
                str(traces),
                "--output_dir",
                str(exported),
            ]
        )
        == 0
    )
    _, processor = make_tiny_vlm("qwen2_5_vl")
    processor.save_pretrained(root / "tiny")

    import pandas as pd
    from datasets import load_from_disk

    ds = load_from_disk(str(traces))
    table = pd.read_parquet(exported / "train.parquet")
    gts = [r["ground_truth"] for r in table["reward_model"]]
    good = list(ds["trace"])
    wrong = good[0].replace(
        f"<answer> {ds[0]['label']} </answer>",
        "<answer> fear </answer>" if ds[0]["label"] != "fear" else "<answer> anger </answer>",
    )
    texts = [
        *good,
        wrong,
        good[1][: len(good[1]) // 2],
        "no trace at all",
        "AU12 <bbox>[nan,1,2,3]</bbox>",
    ]
    rows = [*gts, gts[0], gts[1], gts[2], gts[3]]
    f, a, g = get_tag_rewards("qwen2_5_vl", labels=list(LABELS))
    acts = [json.loads(x)["activated"] for x in rows]
    sizes = [json.loads(x)["image_size"] for x in rows]
    labels = [json.loads(x)["label"] for x in rows]
    want = (
        np.array(f(texts))
        + np.array(a(texts, label=labels))
        + np.array(g(texts, activated=acts, image_size=sizes))
    )
    prompt = "<|im_start|>user\nWhich emotion?<|im_end|>\n<|im_start|>assistant\n"
    spec = {
        "processor": str(root / "tiny"),
        "texts": texts,
        "ground_truths": rows,
        "prompts": [prompt] * len(texts),
        "parquet": str(exported / "train.parquet"),
        "cache_dir": str(root / "cache"),
    }
    (root / "job.json").write_text(json.dumps(spec))
    return {"path": root / "job.json", "want": want.tolist(), "n_good": len(good), "gts": gts}


def test_tag_rewards_in_verl(verl_python: Path, job: dict):
    out = _verl_env.run_driver(
        verl_python, DRIVER, job["path"], timeout=1800, cwd=job["path"].parent
    )
    assert out["verl"] == "0.9.1" and out["transformers"].startswith("5.10")
    assert all(out["round_trip"][: job["n_good"]]), out["round_trip"]
    want = job["want"]
    assert min(want[: job["n_good"]]) > 2.5 and max(want[job["n_good"] :]) < 2.5  # a real spread
    for name in ("naive", "batch"):
        np.testing.assert_allclose(out[name]["last"], want, atol=1e-6, err_msg=name)
        assert out[name]["others_zero"], name
        assert set(out[name]["extra"]) >= {"score", "format", "answer", "grounding"}
        np.testing.assert_allclose(out[name]["extra"]["score"], want, atol=1e-9)
    assert "reward_loop_error" not in out, out.get("reward_loop_error")
    np.testing.assert_allclose(out["reward_loop"], want, atol=1e-9)
    d = out["dataset"]
    assert d["len"] == len(job["gts"]) and d["kinds"][0] == "image" and "text" in d["kinds"]
    assert d["n_images"] == 1 and d["image_tokens"] > 0
    assert d["ground_truth"] == job["gts"][0] and d["data_source"] == "tag/fer"


COMPOSE = r"""
import json, os, sys
from hydra import compose, initialize_config_dir
import verl

cfgdir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
body = open(sys.argv[1]).read().split("python3 -m verl.trainer.main_ppo", 1)[1]
overrides = []
for line in body.splitlines():
    line = line.strip().rstrip("\\").strip()
    if not line or line.startswith('"$@"') or line.startswith("#"):
        continue
    for var, value in (('"$DATA', "data/tag-verl"), ('"$MODEL"', "runs/sft"), ('"$REWARD"', sys.argv[2])):
        line = line.replace(var, value)
    overrides.append(line.replace('"', "").replace("'", ""))
with initialize_config_dir(config_dir=cfgdir, version_base=None):
    cfg = compose(config_name="ppo_trainer", overrides=overrides)
r = cfg.reward
print("RESULT " + json.dumps({
    "n": len(overrides), "path": r.custom_reward_function.path, "name": r.custom_reward_function.name,
    "kwargs": dict(r.custom_reward_function.reward_kwargs), "manager": r.reward_manager.name,
    "rollout_n": cfg.actor_rollout_ref.rollout.n, "kl": cfg.actor_rollout_ref.actor.kl_loss_coef,
    "lr": cfg.actor_rollout_ref.actor.optim.lr, "response_length": cfg.data.max_response_length,
}))
"""


def test_the_verl_recipe_composes_with_verls_config(verl_python: Path):
    """configs/verl_grpo_qwen2_5_vl_7b_rafdb.sh: every override is a key of verl 0.9.1's
    ppo_trainer config (hydra refuses unknown ones), and the reward lines point at TAG."""
    script = REPO / "packages/tag-train/src/tag_train/configs/verl_grpo_qwen2_5_vl_7b_rafdb.sh"
    adapter = REPO / "packages/tag-train/src/tag_train/integrations/verl.py"
    out = _verl_env.run_driver(verl_python, COMPOSE, script, adapter, timeout=600, members=False)
    assert out["path"] == str(adapter) and out["name"] == "compute_score"
    assert out["manager"] == "naive" and out["rollout_n"] == 8 and out["kl"] == 0.04
    assert out["lr"] == 1e-6 and out["response_length"] == 1024
    assert out["kwargs"]["grounding_weight"] == 1.0 and out["kwargs"]["class_aware"] is True
