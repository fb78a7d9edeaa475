"""Kernel-test fixtures."""

from __future__ import annotations

import pytest

from ._data import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param
