"""Loading a backbone (model, processor, adapter) by local path or hub id, via Auto classes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ._coords import BackboneAdapter, get_adapter
from ._families import FAMILIES, UnknownFamilyError, detect_family, family_spec, resolve_family

__all__ = ["BackboneNotFoundError", "load_backbone"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class BackboneNotFoundError(OSError):
    """The backbone's files are not available (missing folder, offline, not downloaded)."""


def _looks_like_path(name: str) -> bool:
    """True for what can only be a filesystem path (not a hub id such as ``org/name``)."""
    if os.path.exists(name):
        return True
    return name.startswith(("/", ".", "~")) or not _HUB_ID.match(name)


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        if getattr(constants, "HF_HUB_OFFLINE", False):
            return True
    except ImportError:  # pragma: no cover
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or (
        os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    )


def _download_hint(name_or_path: str, family: str | None, reason: str) -> str:
    is_hub = bool(_HUB_ID.match(name_or_path)) and not os.path.exists(name_or_path)
    repo = name_or_path if is_hub else family_spec(family or "qwen2_5_vl").example_checkpoint
    local = f"./checkpoints/{repo.split('/')[-1]}"
    where = (
        f"hub id {name_or_path!r} is not in the local cache"
        if is_hub
        else f"local folder {name_or_path!r} does not exist or holds no loadable checkpoint"
    )
    mode = (
        " Offline mode is on (HF_HUB_OFFLINE=1), so nothing is downloaded."
        if _offline()
        else " The hub could not be reached."
        if is_hub
        else ""
    )
    return (
        f"Could not load backbone {name_or_path!r}: {where}.{mode}\n"
        f"Cause: {reason}\n"
        "Get the weights on a machine with network access, e.g.\n"
        f"    huggingface-cli download {repo} --local-dir {local}\n"
        f"(with huggingface_hub >= 1.0 the command is `hf download {repo} --local-dir {local}`),\n"
        f"then pass that folder: load_backbone({local!r}).\n"
        f"Known families: {', '.join(FAMILIES)}; for offline tests use make_tiny_vlm(family)."
    )


def load_backbone(
    name_or_path: str | os.PathLike[str],
    *,
    family: str | None = None,
    dtype: Any = "auto",
    device_map: Any = None,
    processor_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> tuple[Any, Any, BackboneAdapter]:
    """Load a VLM backbone through the transformers Auto classes.

    Args:
        name_or_path: a local checkpoint folder or a hub id (``"Qwen/Qwen2.5-VL-3B-Instruct"``).
        family: expected family; ``None`` detects it from ``config.model_type``. A mismatch
            with the checkpoint raises ``ValueError``.
        dtype: weights dtype for ``from_pretrained`` (``"auto"``, ``torch.bfloat16``, ...).
        device_map: passed to ``from_pretrained`` (``"auto"`` shards over devices).
        processor_kwargs: extra ``AutoProcessor.from_pretrained`` arguments
            (e.g. ``{"max_pixels": 512 * 28 * 28}``).
        **kw: extra ``AutoModelForImageTextToText.from_pretrained`` arguments
            (``attn_implementation``, ``revision``, ``local_files_only``, ...).

    Returns:
        ``(model, processor, adapter)``; the adapter's geometry follows the processor.

    Raises:
        BackboneNotFoundError: the files are missing (no such folder, offline, not in the
            cache); the message says how to download them and pass the folder.
        UnknownFamilyError: the checkpoint (or ``family``) is not a supported family.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ._tiny import load_processor

    name = os.fspath(name_or_path)
    if family is not None:
        family = resolve_family(family)
    expanded = os.path.expanduser(name)
    if _looks_like_path(name) and not os.path.isdir(expanded):
        raise BackboneNotFoundError(
            _download_hint(name, family, f"no directory at {str(Path(expanded).absolute())!r}")
        )
    if os.path.isdir(expanded):
        name = expanded
    hub_kwargs = {
        k: kw[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kw
    }
    try:
        config = AutoConfig.from_pretrained(name, **hub_kwargs)
    except (OSError, ValueError) as exc:
        if isinstance(exc, UnknownFamilyError):
            raise
        if isinstance(exc, ValueError) and "model_type" in str(exc) and os.path.isdir(name):
            raise UnknownFamilyError(
                f"{name!r}: {exc}; known families: {', '.join(FAMILIES)}"
            ) from exc
        raise BackboneNotFoundError(
            _download_hint(name, family, f"{type(exc).__name__}: {exc}")
        ) from exc
    detected = detect_family(config)
    if family is not None and family != detected:
        raise ValueError(
            f"{name!r} is a {detected!r} checkpoint (config.model_type={config.model_type!r}), "
            f"but family={family!r} was requested"
        )
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            name, config=config, dtype=dtype, device_map=device_map, **kw
        )
        processor = load_processor(name, **hub_kwargs, **(processor_kwargs or {}))
    except OSError as exc:
        raise BackboneNotFoundError(
            _download_hint(name, detected, f"{type(exc).__name__}: {exc}")
        ) from exc
    adapter = get_adapter(detected, processor=processor)
    return model, processor, adapter
