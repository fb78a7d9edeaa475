"""Every Triton kernel lowers to real cubin for sm_80 and sm_90, on a machine with no GPU.

Each backend module exposes ``aot_compile_specs() -> [(kernel, signature, constexprs)]``. The
compilation runs in a subprocess without ``TRITON_INTERPRET`` (under the interpreter the kernels
are not JIT functions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

MODULES = [
    "tag_kernels.box_iou._triton",
    "tag_kernels.au_reward._triton",
    "tag_kernels.regions._triton",
    "tag_model.grounding._triton",
]

SCRIPT = textwrap.dedent(
    """
    import importlib, json, os, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    out = []
    for name in sys.argv[1:]:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for fn, sig, cx in mod.aot_compile_specs():
            for cap in (80, 90):
                k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx),
                                   target=GPUTarget("cuda", cap, 32), options={"enable_fp_fusion": False})
                cubin = k.asm["cubin"]
                with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
                    f.write(cubin)
                usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
                os.unlink(f.name)
                out.append(dict(module=name, kernel=fn.__name__, cap=cap, constexprs=repr(cx),
                                elf=cubin[:4] == b"\\x7fELF", size=len(cubin), usage=usage))
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *MODULES],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", MODULES)
def test_kernels_compile_to_cubin(compiled: list[dict], module: str) -> None:
    mine = [c for c in compiled if c["module"] == module]
    assert mine, f"no kernel of {module} compiled"
    assert {c["cap"] for c in mine} == {80, 90}
    for c in mine:
        assert c["elf"] and c["size"] > 1000, c
        assert f"Function {c['kernel']}" in c["usage"], c["usage"]


def test_reward_kernel_has_no_spills(compiled: list[dict]) -> None:
    """K = M = 16 keeps the whole tile in registers on sm_90 (no local memory, no stack)."""
    (c,) = [
        c for c in compiled
        if c["kernel"] == "_au_reward_kernel" and c["cap"] == 90 and "'BLOCK_K': 16" in c["constexprs"]
    ]  # fmt: skip
    assert "LOCAL:0" in c["usage"] and "STACK:0" in c["usage"], c["usage"]
