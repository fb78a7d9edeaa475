"""A throw-away Python environment with the real verl 0.9.1, shared by the slow verl test and
the in-verl benchmark.

verl 0.9.1 pins ``transformers>=5.5.3,<5.11`` while the workspace locks a newer one, so verl
cannot join ``uv.lock``. :func:`verl_python` makes ``uv venv`` + ``uv pip install
verl==0.9.1`` with torch, numba, einops and triton pinned to the workspace's versions (uv's
cache serves them: seconds once the cache is warm; no vLLM, no GPU). The workspace members run
there from their ``src/`` folders on ``PYTHONPATH`` (:func:`verl_env`), not installed, since
their pins would drag transformers back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["REPO", "SRC", "VERL_VERSION", "run_driver", "verl_env", "verl_python"]

REPO = Path(__file__).resolve().parents[1]
SRC = [
    REPO / "kernels" / "src",
    REPO / "packages" / "tag-model" / "src",
    REPO / "packages" / "tag-train" / "src",
]
VERL_VERSION = "0.9.1"


def _pins() -> list[str]:
    """torch & co. at the workspace's versions: uv's cache has them (no large download)."""
    pins = []
    for name in ("torch", "torchvision", "numba", "einops", "triton", "pillow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    return pins


def verl_python(venv: Path) -> Path:
    """The interpreter of a verl environment at ``venv``, made there unless it is complete.

    Raises ``FileNotFoundError`` without uv and ``RuntimeError`` (with uv's stderr) when the
    install fails, for example offline with a cold cache.
    """
    python = venv / "bin" / "python"
    if (venv / ".tag-complete").exists() and python.exists():
        return python
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        raise FileNotFoundError("uv is not installed")
    shutil.rmtree(venv, ignore_errors=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([uv, "venv", "-q", str(venv), "--python", py], check=True, timeout=300)
    cmd = [uv, "pip", "install", "-q", "--python", str(python), f"verl=={VERL_VERSION}"]
    cmd += ["qwen-vl-utils", *_pins()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"installing verl {VERL_VERSION} failed:\n{r.stderr[-4000:]}")
    (venv / ".tag-complete").write_text(VERL_VERSION)
    return python


def verl_env() -> dict[str, str]:
    """``os.environ`` with the members' ``src/`` on ``PYTHONPATH`` and no active venv."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, SRC))}
    env.pop("VIRTUAL_ENV", None)
    return env


def run_driver(
    python: str | Path,
    code: str,
    *args: object,
    timeout: float,
    cwd: Path | None = None,
    members: bool = True,
) -> dict:
    """Run ``code`` (``python -c``) with ``args`` in another environment and return the JSON
    it printed on its last ``RESULT `` line. ``members``: the workspace members' ``src/`` on
    ``PYTHONPATH`` (:func:`verl_env`); otherwise the environment is inherited. A failed run
    raises ``AssertionError`` with the ends of its stdout and stderr."""
    r = subprocess.run(
        [str(python), "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=verl_env() if members else None,
        cwd=cwd,
    )
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise AssertionError(f"driver failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return json.loads(lines[-1][len("RESULT ") :])
