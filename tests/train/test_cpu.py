"""tag_train._cpu: the CPU job set-up that the demo, the pretraining and the arm scripts share."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PROBE = """
import json, os, sys
from tag_train._cpu import cpu_job
cpu_job(False{threads})
import torch
from transformers.utils import logging as hf_logging
print(json.dumps({{
    "omp": os.environ.get("OMP_WAIT_POLICY"),
    "threads": torch.get_num_threads(),
    "hf_bars": hf_logging.is_progress_bar_enabled(),
}}))
"""


def _probe(threads: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run(
        [sys.executable, "-c", _PROBE.format(threads=threads)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_cpu_job_sets_up_a_fresh_process_and_takes_a_thread_count():
    # default: OpenMP told not to spin (torch was not imported yet), at most 2 threads, quiet
    got = _probe("")
    assert got["omp"] == "PASSIVE" and got["hf_bars"] is False
    assert got["threads"] == max(1, min(2, os.cpu_count() or 1))
    # the arm scripts' --threads
    assert _probe(", threads=1")["threads"] == 1
