"""TAG's ``compute_score`` inside EasyR1's own ``AutoRewardManager`` (slow; needs a checkout).

EasyR1 is not on PyPI, so this test needs its source: set ``EASYR1_SRC`` to a checkout of
https://github.com/hiyouga/EasyR1 (the folder that holds its ``verl/`` package); without it
the test skips. It runs in the throw-away verl 0.9.1 environment (``tests/_verl_env.py``),
which already has what EasyR1's reward path imports (ray, tensordict, codetiming, yaml), with
EasyR1's ``verl`` package first on ``sys.path`` so that it shadows verl 0.9.1's.

There, EasyR1's ``RewardConfig`` parses ``<integrations>/easyr1.py:compute_score`` the way
``worker.reward.reward_function`` is given, its ``AutoRewardManager`` loads the file, reads
``REWARD_TYPE`` and calls the function on a ``DataProto`` of tokenized TAG completions: the
reward tensor must hold ``tag_train.rewards``' total at each response's last token, and the
metrics every component.

Run: ``EASYR1_SRC=/path/to/EasyR1 uv run pytest -q -m slow tests/train/test_integrations_easyr1.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests import _verl_env

pytestmark = pytest.mark.slow

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # EasyR1's verl package shadows verl 0.9.1's
import numpy as np
import torch
from transformers import AutoTokenizer

import verl
from verl.protocol import DataProto
from verl.workers.reward import AutoRewardManager, RewardConfig

job = json.load(open(sys.argv[2]))
tok = AutoTokenizer.from_pretrained(job["tokenizer"])
config = RewardConfig(reward_function=job["adapter"] + ":compute_score")
config.post_init()
manager = AutoRewardManager(config, tok)
resp = [tok(t, add_special_tokens=False)["input_ids"] for t in job["texts"]]
B, R = len(resp), max(map(len, resp)) + 2
responses = torch.full((B, R), tok.pad_token_id or 0, dtype=torch.long)
mask = torch.zeros((B, R), dtype=torch.long)
for i, r in enumerate(resp):
    responses[i, :len(r)] = torch.tensor(r)
    mask[i, :len(r)] = 1
data = DataProto.from_dict(
    tensors={"responses": responses, "response_mask": mask},
    non_tensors={"ground_truth": np.array(job["labels"], dtype=object)},
)
reward, metrics = manager.compute_reward(data)
print("RESULT " + json.dumps({
    "easyr1": verl.__version__, "type": manager.reward_type,
    "last": [float(reward[i, len(r) - 1]) for i, r in enumerate(resp)],
    "total": float(reward.sum()), "metrics": sorted(metrics),
}))
"""


def test_tag_compute_score_in_easyr1s_reward_manager(tmp_path: Path):
    src = os.environ.get("EASYR1_SRC")
    if not src or not (Path(src) / "verl" / "workers" / "reward" / "function.py").exists():
        pytest.skip("set EASYR1_SRC to an EasyR1 checkout (EasyR1 is not on PyPI)")
    try:
        python = _verl_env.verl_python(_verl_env.REPO / ".tag-cache" / "verl-0.9.1-venv")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from tag_model.backbones import make_tiny_vlm
    from tag_train.integrations import easyr1

    from tests.train.test_integrations import make_rows, reference

    texts, gts = make_rows(24, seed=7)
    fmt, ans, grd = reference(texts, gts)
    want = fmt + np.nan_to_num(ans) + grd
    _, processor = make_tiny_vlm("qwen2_vl")
    processor.tokenizer.save_pretrained(tmp_path / "tok")
    job = {
        "tokenizer": str(tmp_path / "tok"),
        "adapter": easyr1.__file__,
        "texts": texts,
        "labels": [g.to_json() for g in gts],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = _verl_env.run_driver(python, DRIVER, src, tmp_path / "job.json", timeout=900)
    assert out["type"] == "batch" and not out["easyr1"].startswith("0.9")
    np.testing.assert_allclose(out["last"], want, atol=1e-5)
    assert abs(out["total"] - float(np.sum(want))) < 1e-3  # nothing but the last tokens
    assert {"overall", "format", "accuracy", "grounding"} <= set(out["metrics"])
    assert np.std(want) > 0.3
