"""TAG's ``reward_func`` inside the real OpenRLHF 0.11.2 code that calls it (slow).

Why not a full install: OpenRLHF 0.11.2 requires ``flash-attn==2.8.3``, which has no wheel on
PyPI; its source build needs torch and the CUDA toolkit (``nvcc``) at build time, so
``pip install openrlhf`` fails on a CPU machine ("Failed to build flash-attn"), and its
package ``__init__`` imports DeepSpeed. So the test installs the OpenRLHF wheel itself with
``--no-deps`` (plus ``aiohttp``, which the module imports) into a folder, registers the
``openrlhf`` and ``openrlhf.utils`` packages by path without running their ``__init__``
files, and imports OpenRLHF's own ``openrlhf/utils/agent.py``. Its
``SingleTurnAgentExecutor`` is the code that, in a real run, loads ``--reward.remote_url
file.py``, decodes prompt + response into the query and calls ``reward_func(queries,
prompts, labels)``; here it loads TAG's adapter file, and a stand-in engine returns the
tokens of a known completion (the only part not OpenRLHF's: vLLM needs a GPU). The executor
swallows reward errors (it logs them and leaves ``reward`` ``None``), so the test checks that
the reward is there and equals ``tag_train.rewards`` on the same completion.

Run: ``uv run pytest -q -m slow tests/train/test_integrations_openrlhf.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import _verl_env

pytestmark = pytest.mark.slow
OPENRLHF = "0.11.2"

DRIVER = r"""
import asyncio, json, sys, types
from pathlib import Path
from types import SimpleNamespace

sys.path.append(sys.argv[1])  # OpenRLHF's wheel and aiohttp, after the workspace's packages
root = Path(sys.argv[1]) / "openrlhf"
for name, path in (("openrlhf", root), ("openrlhf.utils", root / "utils")):
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    sys.modules[name] = mod
from openrlhf.utils.agent import SingleTurnAgentExecutor
from transformers import AutoTokenizer

job = json.load(open(sys.argv[2]))
tok = AutoTokenizer.from_pretrained(job["tokenizer"])
executor = SingleTurnAgentExecutor(remote_rm_url=job["adapter"])


class Engine:  # stands in for vLLM: answers with the tokens of a known completion
    def __init__(self, text):
        self.ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]

    async def generate(self, prompt_token_ids, params, multi_modal_data=None):
        out = SimpleNamespace(token_ids=self.ids, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


params = SimpleNamespace(max_tokens=512, logprobs=None)
rows = []
for text, label in zip(job["texts"], job["labels"]):
    out = asyncio.run(executor.execute(job["prompt"], label, params, 4096, tok, Engine(text)))
    reward = out["reward"]
    rows.append({
        "reward": None if reward is None else float(reward),
        "scores": None if out["scores"] is None else float(out["scores"]),
        "logs": {k: float(v) for k, v in (out["extra_logs"] or {}).items()},
    })
print("RESULT " + json.dumps({"rows": rows, "loaded": executor.reward_func is not None}))
"""


@pytest.fixture(scope="module")
def openrlhf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed")
    target = tmp_path_factory.mktemp("openrlhf")
    py = [uv, "pip", "install", "-q", "--python", sys.executable, "--target", str(target)]
    for extra in (["--no-deps", f"openrlhf=={OPENRLHF}"], ["aiohttp"]):
        r = subprocess.run([*py, *extra], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.fail(f"installing {extra[-1]} failed:\n{r.stderr[-3000:]}")
    return target


def test_tag_reward_func_in_openrlhfs_single_turn_executor(openrlhf_dir: Path, tmp_path: Path):
    from tag_model.backbones import make_tiny_vlm
    from tag_train.integrations import openrlhf

    from tests.train.test_integrations import make_rows, reference

    texts, gts = make_rows(24, seed=5)
    fmt, ans, grd = reference(texts, gts)
    want = fmt + np.nan_to_num(ans) + grd
    labels = [g.to_json() for g in gts]
    _, processor = make_tiny_vlm("qwen2_vl")
    processor.tokenizer.save_pretrained(tmp_path / "tok")
    prompt = (
        "<|im_start|>user\nWhich emotion does this face show?<|im_end|>\n<|im_start|>assistant\n"
    )
    job = {
        "tokenizer": str(tmp_path / "tok"),
        "adapter": openrlhf.__file__,
        "texts": texts,
        "labels": labels,
        "prompt": prompt,
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = _verl_env.run_driver(
        sys.executable, DRIVER, openrlhf_dir, tmp_path / "job.json", timeout=900
    )
    assert out["loaded"]
    got = [row["reward"] for row in out["rows"]]
    assert None not in got, "OpenRLHF swallowed a reward error (reward None)"
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose([row["scores"] for row in out["rows"]], want, atol=1e-5)
    assert np.std(want) > 0.3  # a real spread of rewards, not a constant
    assert all(
        {"tag/format", "tag/answer", "tag/grounding"} <= set(row["logs"]) for row in out["rows"]
    )
