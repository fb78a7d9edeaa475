"""Loading a backbone (model, processor, adapter) by local path or hub id, via Auto classes.

A LoRA adapter folder (peft, with ``adapter_config.json``) loads too: its base model comes
from ``base_model_name_or_path`` through the same path, then the adapter is applied.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ._coords import BackboneAdapter, get_adapter
from ._families import (
    FAMILIES,
    QWEN_FAMILIES,
    UnknownFamilyError,
    detect_family,
    family_spec,
    resolve_family,
)

__all__ = [
    "SHIPPED_BACKBONES",
    "BackboneNotFoundError",
    "adapter_base_model",
    "load_backbone",
    "shipped_backbone_path",
]

#: Backbones that ship inside this package (safetensors, tokenizer, processor), by name.
#: ``tag-nano`` is ``tag-train pretrain --preset nano``: a 2M-parameter Qwen2-VL pretrained
#: on SynthFACS faces (a vision stage, then grounding questions); its ``pretrain.json`` holds
#: the command, the time and the final metrics.
SHIPPED_BACKBONES: dict[str, str] = {"tag-nano": "tag-nano"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class BackboneNotFoundError(OSError):
    """The backbone's files are not available (missing folder, offline, not downloaded)."""


def shipped_backbone_path(name: str) -> Path:
    """The folder of a backbone shipped with ``tag-model`` (:data:`SHIPPED_BACKBONES`).

    Raises:
        KeyError: ``name`` is not a shipped backbone.
        BackboneNotFoundError: this install lacks its files (a build without package data).
    """
    if name not in SHIPPED_BACKBONES:
        raise KeyError(
            f"{name!r} is not a shipped backbone; shipped: {', '.join(SHIPPED_BACKBONES)}"
        )
    path = Path(__file__).resolve().parent.parent / "_data" / SHIPPED_BACKBONES[name]
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise BackboneNotFoundError(
            f"{name}: this tag-model install has no files at {path}; reinstall tag-model, or "
            f"rebuild them with `tag-train pretrain --preset nano --output_dir {path}`"
        )
    return path


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


_QWEN_ONLY_KWARGS = ("min_pixels", "max_pixels")


def _check_processor_kwargs(family: str, processor_kwargs: dict[str, Any] | None) -> None:
    """Refuse the Qwen-VL pixel budget for the other families, whose processors ignore it."""
    bad = [k for k in _QWEN_ONLY_KWARGS if (processor_kwargs or {}).get(k) is not None]
    if bad and family not in QWEN_FAMILIES:
        raise ValueError(
            f"{', '.join(bad)} set the Qwen-VL image processors' pixel budget; the "
            f"{family_spec(family).display_name} processor would ignore them silently. Its image "
            f"resolution is its tiling ({family_spec(family).tiling}), set in the checkpoint's "
            "preprocessor_config.json"
        )


_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def adapter_base_model(adapter_dir: str | os.PathLike[str]) -> str:
    """The base model a peft adapter folder was trained on (``base_model_name_or_path``).

    A relative path that does not exist from the working directory is tried relative to
    the adapter folder.

    Raises:
        ValueError: ``adapter_config.json`` is unreadable or names no base model.
    """
    path = Path(os.path.expanduser(os.fspath(adapter_dir))) / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the adapter config: {exc}") from None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not isinstance(base, str) or not base.strip():
        raise ValueError(
            f"{path}: field 'base_model_name_or_path' is empty; pass the base model "
            "explicitly (load_backbone(..., base_model=...), --base_model)"
        )
    if not os.path.isabs(base) and not os.path.exists(base):
        beside = path.parent / base
        if beside.is_dir():
            return str(beside.resolve())
    return base


def load_backbone(
    name_or_path: str | os.PathLike[str],
    *,
    family: str | None = None,
    dtype: Any = "auto",
    device_map: Any = None,
    processor_kwargs: dict[str, Any] | None = None,
    merge: bool = False,
    adapter_trainable: bool = False,
    base_model: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> tuple[Any, Any, BackboneAdapter]:
    """Load a VLM backbone (full checkpoint or LoRA adapter) through the transformers Auto classes.

    Args:
        name_or_path: a shipped backbone's name (``"tag-nano"``, :data:`SHIPPED_BACKBONES`;
            offline, from this package's data), a local checkpoint folder, a hub id
            (``"Qwen/Qwen2.5-VL-3B-Instruct"``),
            or a LoRA adapter folder (peft, holding ``adapter_config.json``). For an adapter,
            the base model named by its ``base_model_name_or_path`` (or ``base_model``) is
            loaded the same way and the adapter applied with ``PeftModel.from_pretrained``;
            the processor comes from the adapter folder when one was saved there, else from
            the base.
        family: expected family; ``None`` detects it from ``config.model_type``. A mismatch
            with the checkpoint raises ``ValueError``.
        dtype: weights dtype for ``from_pretrained`` (``"auto"``, ``torch.bfloat16``, ...).
        device_map: passed to ``from_pretrained`` (``"auto"`` shards over devices).
        processor_kwargs: extra ``AutoProcessor.from_pretrained`` arguments
            (e.g. ``{"max_pixels": 512 * 28 * 28}``).
        **kw: extra ``AutoModelForImageTextToText.from_pretrained`` arguments
            (``attn_implementation``, ``revision``, ``local_files_only``, ...).
        merge: adapters only: return ``merge_and_unload()`` (a plain transformers model with
            the LoRA deltas folded in) instead of the ``PeftModel``.
        adapter_trainable: adapters only: load the adapter weights trainable (continue
            training it); otherwise the ``PeftModel`` is for inference.
        base_model: adapters only: the base model to use instead of the one the adapter
            names (when the base has moved since training).

    Returns:
        ``(model, processor, adapter)``; the adapter's geometry follows the processor. For a
        LoRA folder ``model`` is a ``peft.PeftModel`` (or, with ``merge=True``, the merged
        transformers model).

    Raises:
        BackboneNotFoundError: the files are missing (no such folder, offline, not in the
            cache); the message says how to download them and pass the folder.
        UnknownFamilyError: the checkpoint (or ``family``) is not a supported family.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ._tiny import load_processor

    name = os.fspath(name_or_path)
    if name in SHIPPED_BACKBONES and not os.path.exists(name):
        name = str(shipped_backbone_path(name))
    if family is not None:
        family = resolve_family(family)
    expanded = os.path.expanduser(name)
    if _looks_like_path(name) and not os.path.isdir(expanded):
        raise BackboneNotFoundError(
            _download_hint(name, family, f"no directory at {str(Path(expanded).absolute())!r}")
        )
    if os.path.isdir(expanded):
        name = expanded
        if os.path.isfile(os.path.join(name, "adapter_config.json")):
            return _load_adapter(
                name,
                family=family,
                dtype=dtype,
                device_map=device_map,
                processor_kwargs=processor_kwargs,
                merge=merge,
                trainable=adapter_trainable,
                base_model=base_model,
                **kw,
            )
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
    _check_processor_kwargs(detected, processor_kwargs)
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


def _load_adapter(
    adapter_dir: str,
    *,
    family: str | None,
    dtype: Any,
    device_map: Any,
    processor_kwargs: dict[str, Any] | None,
    merge: bool,
    trainable: bool,
    base_model: str | os.PathLike[str] | None,
    **kw: Any,
) -> tuple[Any, Any, BackboneAdapter]:
    from peft import PeftModel

    from ._tiny import load_processor

    base = os.fspath(base_model) if base_model is not None else adapter_base_model(adapter_dir)
    if os.path.isdir(os.path.expanduser(base)) and os.path.isfile(
        os.path.join(os.path.expanduser(base), "adapter_config.json")
    ):
        raise ValueError(
            f"{adapter_dir}: its base model {base!r} is itself a LoRA adapter; merge that one "
            "first (tag-train merge) and pass the merged folder as base_model"
        )
    model, processor, adapter = load_backbone(
        base,
        family=family,
        dtype=dtype,
        device_map=device_map,
        processor_kwargs=processor_kwargs,
        **kw,
    )
    model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable and not merge)
    if merge:
        model = model.merge_and_unload()
    if any(os.path.isfile(os.path.join(adapter_dir, f)) for f in _PROCESSOR_FILES):
        processor = load_processor(adapter_dir, family=adapter.family, **(processor_kwargs or {}))
        adapter = get_adapter(adapter.family, processor=processor)
    return model, processor, adapter
