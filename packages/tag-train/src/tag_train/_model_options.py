"""TRL-style model-loading options -> ``from_pretrained`` / ``AutoProcessor`` keyword arguments.

One translation for ``tag-train sft|rl`` (:class:`tag_train._args.ModelArguments`) and the
local HF teacher: ``dtype``, ``attn_implementation``, ``load_in_4bit`` / ``load_in_8bit``
(bitsandbytes), ``min_pixels`` / ``max_pixels`` and the hub ``revision``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["DTYPES", "model_load_kwargs", "processor_kwargs", "quantization_config", "torch_dtype"]

#: The ``--dtype`` values (as in TRL's ``ModelConfig``).
DTYPES = ("auto", "bfloat16", "float16", "float32")


def torch_dtype(name: Any) -> Any:
    """``"auto"`` (or None) stays ``"auto"``; ``"bfloat16"`` -> ``torch.bfloat16``; a dtype as is."""
    import torch

    if name is None or name == "auto":
        return "auto"
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def quantization_config(
    *,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    dtype: Any = "auto",
    bnb_4bit_quant_type: str = "nf4",
    use_bnb_nested_quant: bool = False,
) -> Any:
    """A ``BitsAndBytesConfig`` for 4/8-bit loading, or None when neither is asked for.

    Raises:
        ValueError: both asked for.
        RuntimeError: bitsandbytes is not installed, or there is no CUDA device (the message
            says which, and how to run without quantization).
    """
    if not (load_in_4bit or load_in_8bit):
        return None
    if load_in_4bit and load_in_8bit:
        raise ValueError("--load_in_4bit and --load_in_8bit exclude each other; choose one")
    flag = "--load_in_4bit" if load_in_4bit else "--load_in_8bit"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            f"{flag} needs bitsandbytes, which is not installed here: `pip install bitsandbytes` "
            "(CUDA machines), or drop the flag to load the weights unquantized"
        )
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{flag}: bitsandbytes quantization needs a CUDA device and none is available; "
            "drop the flag (and use --dtype bfloat16 to halve memory) on this machine"
        )
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch_dtype(dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if compute == "auto" else compute,
        bnb_4bit_quant_type=bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=use_bnb_nested_quant,
    )


def processor_kwargs(
    min_pixels: int | None = None, max_pixels: int | None = None
) -> dict[str, Any]:
    """``AutoProcessor.from_pretrained`` arguments for the image processor's pixel budget."""
    out: dict[str, Any] = {}
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is None:
            continue
        if int(value) <= 0:
            raise ValueError(f"--{name} must be a positive number of pixels, got {value!r}")
        out[name] = int(value)
    if "min_pixels" in out and "max_pixels" in out and out["min_pixels"] > out["max_pixels"]:
        raise ValueError(
            f"--min_pixels ({out['min_pixels']}) is larger than --max_pixels ({out['max_pixels']})"
        )
    return out


def model_load_kwargs(args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(load_backbone keyword arguments, processor keyword arguments)`` for ``args``.

    ``args`` has :class:`~tag_train._args.ModelArguments`' fields (missing ones count as
    unset). Quantized weights are placed on this process's GPU (``device_map``), as TRL does.
    """
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    kw: dict[str, Any] = {"dtype": torch_dtype(get("dtype", "auto"))}
    if get("attn_implementation"):
        kw["attn_implementation"] = get("attn_implementation")
    if get("model_revision"):
        kw["revision"] = get("model_revision")
    quant = quantization_config(
        load_in_4bit=bool(get("load_in_4bit", False)),
        load_in_8bit=bool(get("load_in_8bit", False)),
        dtype=get("dtype", "auto"),
        bnb_4bit_quant_type=get("bnb_4bit_quant_type", "nf4"),
        use_bnb_nested_quant=bool(get("use_bnb_nested_quant", False)),
    )
    if quant is not None:
        from accelerate import PartialState

        kw["quantization_config"] = quant
        kw["device_map"] = {"": PartialState().local_process_index}
    return kw, processor_kwargs(get("min_pixels"), get("max_pixels"))
