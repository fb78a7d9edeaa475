"""Root test configuration (tests/ and bench/).

Triton kernels run through the interpreter when there is no CUDA device. The variable must be
set before any ``@triton.jit`` kernel is defined, so it is set here, before test modules import
``tag_kernels``' Triton backends (they are imported lazily, on first use).

Property tests (hypothesis) are derandomized by default, so a run of ``uv run pytest`` is
reproducible: CI never fails on an example that the previous run did not draw. Set
``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples (and more of them).
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


try:
    from hypothesis import settings as _hyp_settings
except ImportError:  # pragma: no cover
    pass
else:
    _hyp_settings.register_profile("default-derandomized", derandomize=True, print_blob=True)
    _hyp_settings.register_profile("explore", max_examples=1000, print_blob=True)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default-derandomized"))

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
