"""Root test configuration (tests/ and bench/).

Triton kernels run through the interpreter when there is no CUDA device. The variable must be
set before any ``@triton.jit`` kernel is defined, so it is set here, before test modules import
``tag_kernels``' Triton backends (they are imported lazily, on first use).
"""

from __future__ import annotations

import os

import pytest


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


HAS_CUDA = _has_cuda()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
