"""Input classification, validation and backend choice shared by every op.

Every public op takes arrays from one *family* (torch, NumPy or JAX) and returns results in
the same family (and, for torch, on the same device). The backend is picked from the input:

========================  ==========
input                     backend
========================  ==========
CUDA ``torch.Tensor``     ``triton``
CPU ``torch.Tensor``      ``numba``
``numpy.ndarray``         ``numba``
``jax.Array``             ``jax``
========================  ==========

``backend=`` overrides the choice: ``"torch"`` (the reference), ``"numba"``, ``"triton"``,
``"jax"``. The override converts inputs as needed and converts results back to the input family.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import numpy as np
import torch

Family = Literal["torch", "numpy", "jax"]
Backend = Literal["torch", "numba", "triton", "jax"]
BACKENDS: tuple[str, ...] = ("torch", "numba", "triton", "jax")


def _is_jax(x: Any) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def family_of(x: Any) -> Family:
    """Return the array family of ``x`` (``"torch"``, ``"numpy"`` or ``"jax"``)."""
    if isinstance(x, torch.Tensor):
        return "torch"
    if isinstance(x, np.ndarray):
        return "numpy"
    if _is_jax(x):
        return "jax"
    raise ValueError(f"expected a torch.Tensor, numpy.ndarray or jax.Array, got {type(x).__name__}")


def common_family(op: str, **arrays: Any) -> Family:
    """The single family shared by ``arrays``; mixed families or devices raise ``ValueError``."""
    fams = {name: family_of(a) for name, a in arrays.items()}
    kinds = set(fams.values())
    if len(kinds) != 1:
        detail = ", ".join(f"{n}={f}" for n, f in fams.items())
        raise ValueError(f"{op}: all inputs must be one array family, got {detail}")
    fam = kinds.pop()
    if fam == "torch":
        devs = {name: a.device for name, a in arrays.items()}
        if len(set(devs.values())) != 1:
            detail = ", ".join(f"{n} on {d}" for n, d in devs.items())
            raise ValueError(f"{op}: all tensors must be on one device, got {detail}")
    return fam


def pick_backend(op: str, family: Family, sample: Any, backend: str | None) -> Backend:
    """Choose the backend for ``family`` (``sample`` is one input), honouring an override."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
        on_cuda = family == "torch" and sample.is_cuda
        if backend == "triton" and not on_cuda and not triton_interpreting():
            raise ValueError(
                f"{op}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for the "
                "interpreter); got "
                + (f"a tensor on {sample.device}" if family == "torch" else f"{family} input")
            )
        return backend  # type: ignore[return-value]
    if family == "jax":
        return "jax"
    if family == "torch" and sample.is_cuda:
        return "triton"
    return "numba"


def triton_interpreting() -> bool:
    """True when Triton kernels run in the interpreter (``TRITON_INTERPRET=1``)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_shape(op: str, name: str, x: Any, ndim: int, last: int | None = None) -> tuple[int, ...]:
    """Raise ``ValueError`` unless ``x`` has ``ndim`` dims (and last dim ``last``)."""
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != ndim or (last is not None and shape[-1] != last):
        want = f"{ndim}-d" + (f" with last dim {last}" if last is not None else "")
        raise ValueError(f"{op}: {name} must be {want}, got shape {shape}")
    return shape


def check_float(op: str, name: str, x: Any) -> None:
    """Raise ``ValueError`` unless ``x`` holds floating-point values."""
    dt = x.dtype
    if isinstance(x, torch.Tensor):
        ok = dt.is_floating_point
    else:
        ok = np.issubdtype(np.dtype(dt), np.floating)
    if not ok:
        raise ValueError(f"{op}: {name} must be a floating dtype, got {dt}")


def check_int(op: str, name: str, x: Any) -> None:
    """Raise ``ValueError`` unless ``x`` holds integers."""
    dt = x.dtype
    if isinstance(x, torch.Tensor):
        ok = not dt.is_floating_point and not dt.is_complex and dt != torch.bool
    else:
        ok = np.issubdtype(np.dtype(dt), np.integer)
    if not ok:
        raise ValueError(f"{op}: {name} must be an integer dtype, got {dt}")


def to_numpy(x: Any, dtype: Any) -> np.ndarray:
    """C-contiguous NumPy view/copy of ``x`` with ``dtype`` (no Python-object round trip)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_cuda:
            x = x.cpu()
        if x.dtype == torch.bfloat16:  # NumPy has no bfloat16
            x = x.to(torch.float32)
        x = x.numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def to_torch(x: Any, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """``x`` as a contiguous torch tensor of ``dtype`` on ``device``."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype).contiguous()
    return torch.as_tensor(np.asarray(x)).to(device=device, dtype=dtype).contiguous()


def to_jax(x: Any, dtype: Any) -> Any:
    """``x`` as a JAX array of ``dtype``."""
    import jax.numpy as jnp

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return jnp.asarray(x, dtype=dtype)


def from_numpy(x: np.ndarray, family: Family, like: Any) -> Any:
    """Convert a NumPy result back to ``family`` (torch results go to ``like``'s device)."""
    if family == "numpy":
        return x
    if family == "torch":
        return torch.from_numpy(x).to(like.device)
    return to_jax(x, x.dtype)


def from_torch(x: torch.Tensor, family: Family, like: Any) -> Any:
    """Convert a torch result back to ``family``."""
    if family == "torch":
        return x.to(like.device)
    arr = x.detach().cpu().numpy()
    if family == "numpy":
        return arr
    return to_jax(arr, arr.dtype)


def from_jax(x: Any, family: Family, like: Any) -> Any:
    """Convert a JAX result back to ``family``."""
    if family == "jax":
        return x
    arr = np.asarray(x)
    if family == "numpy":
        return arr
    return torch.from_numpy(arr.copy()).to(like.device)
