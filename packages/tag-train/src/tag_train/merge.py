"""``tag-train merge``: fold a LoRA adapter into its base model and save a full checkpoint.

The output folder is a standard Hugging Face checkpoint that ``from_pretrained``,
``tag-eval run`` and ``vllm serve`` load without peft:

- ``config.json`` (+ ``generation_config.json`` when the base has one);
- ``model.safetensors``, or ``model-0000k-of-0000n.safetensors`` shards with
  ``model.safetensors.index.json``;
- the processor: ``tokenizer.json`` / ``tokenizer_config.json``, ``processor_config.json``
  (transformers 5), plus ``preprocessor_config.json`` (the image processor on its own, the
  file older transformers and vLLM's processor loading look for), and the chat template
  (``chat_template.jinja``);
- ``tag_settings.json`` (family, label set, prompt style, detector: from the adapter folder,
  else from its base).

The layout was checked against the standard HF layout that vLLM loads, as read from vLLM's
``vllm/model_executor/model_loader/default_loader.py`` of the 0.10 series (weights: the
``*.safetensors`` files, filtered by ``model.safetensors.index.json`` when present; config,
tokenizer, processor and chat template through transformers' Auto classes), not by running
vLLM, which is not installed here. :func:`check_hf_layout` checks a folder for that layout.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MERGE_HELP",
    "MergeArguments",
    "MergeResult",
    "check_hf_layout",
    "merge_adapter",
    "run_merge",
]

MERGE_HELP = (
    "Fold a LoRA adapter (tag-train sft|rl --use_peft output, or one of its checkpoint-* "
    "folders) into its base model and save a full Hugging Face checkpoint: weights "
    "(safetensors), config, processor, chat template and tag_settings.json, loadable by "
    "from_pretrained, tag-eval run and vllm serve without peft."
)


@dataclass
class MergeArguments:
    """Arguments of ``tag-train merge``."""

    adapter: str = field(metadata={"help": "The LoRA adapter folder (adapter_config.json)."})
    output_dir: str = field(metadata={"help": "Where the merged full checkpoint is saved."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype of the merge and of the saved weights; 'auto': the base checkpoint's.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Base model to merge into (default: the adapter's base_model_name_or_path)."
        },
    )
    max_shard_size: str = field(
        default="5GB", metadata={"help": "Largest safetensors shard (save_pretrained)."}
    )


logger = logging.getLogger(__name__)


class MergeResult:
    """What :func:`merge_adapter` wrote."""

    def __init__(self, output_dir: Path, files: list[str], settings: Any, base: str) -> None:
        self.output_dir = output_dir
        self.files = files
        self.settings = settings
        self.base = base

    def as_text(self) -> str:
        tail = (
            "tag_settings.json written"
            if self.settings is not None
            else "no tag_settings.json (neither the adapter nor its base had one)"
        )
        return (
            f"tag-train merge: {self.base} + adapter -> {self.output_dir} "
            f"({len(self.files)} files; {tail})"
        )


def check_hf_layout(folder: str | os.PathLike[str]) -> list[str]:
    """What a full checkpoint folder lacks for ``from_pretrained`` / vLLM (empty: nothing).

    Needed: ``config.json``; weights as ``model.safetensors`` or an index with its shards;
    a tokenizer (``tokenizer.json`` or ``tokenizer_config.json``); an image processor
    config (``preprocessor_config.json`` or ``processor_config.json``); a chat template
    (``chat_template.jinja``/``chat_template.json`` or one inside ``tokenizer_config.json``);
    and no ``adapter_config.json`` (vLLM would take it for an adapter).
    """
    import json

    p = Path(folder)
    missing: list[str] = []
    if not (p / "config.json").is_file():
        missing.append("config.json")
    index = p / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        missing += [s for s in sorted(shards) if not (p / s).is_file()]
    elif not (p / "model.safetensors").is_file():
        missing.append("model.safetensors (or model.safetensors.index.json and shards)")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        missing.append("tokenizer.json")
    if not any((p / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        missing.append("preprocessor_config.json")
    has_template = any((p / f).is_file() for f in ("chat_template.jinja", "chat_template.json"))
    if not has_template and (p / "tokenizer_config.json").is_file():
        tok = json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8"))
        has_template = bool(tok.get("chat_template"))
    if not has_template:
        missing.append("chat_template.jinja")
    if (p / "adapter_config.json").is_file():
        missing.append("(no adapter_config.json: this is an adapter folder, not a full model)")
    return missing


def merge_adapter(
    adapter_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    dtype: Any = "auto",
    base_model: str | os.PathLike[str] | None = None,
    max_shard_size: str | int = "5GB",
) -> MergeResult:
    """Load ``base + adapter``, ``merge_and_unload()``, and save a full checkpoint.

    Args:
        adapter_dir: a peft LoRA folder (``adapter_config.json``), e.g. ``tag-train sft
            --use_peft``'s output or one of its ``checkpoint-*`` folders.
        output_dir: where the merged checkpoint goes (created; must not be ``adapter_dir``).
        dtype: the saved weights' dtype: ``"auto"`` (the base checkpoint's), ``"bfloat16"``,
            ``"float16"`` or ``"float32"`` (also a ``torch.dtype``). The merge runs in it.
        base_model: use this base instead of the adapter's ``base_model_name_or_path``.
        max_shard_size: ``save_pretrained``'s shard size.

    Raises:
        ValueError: ``adapter_dir`` is not an adapter folder, or ``output_dir`` is it.
        RuntimeError: the saved folder misses a file of the HF layout (see
            :func:`check_hf_layout`).
    """
    from tag_model.backbones import (
        checkpoint_kind,
        load_backbone,
        load_tag_settings,
        save_tag_settings,
    )
    from tag_model.backbones._loading import adapter_base_model

    from tag_train._model_options import torch_dtype

    src = Path(os.path.expanduser(os.fspath(adapter_dir)))
    out = Path(os.path.expanduser(os.fspath(output_dir)))
    if checkpoint_kind(src) != "adapter":
        raise ValueError(
            f"{src} is not a LoRA adapter folder (no adapter_config.json); "
            "tag-train merge folds an adapter into its base model"
        )
    if out.resolve() == src.resolve():
        raise ValueError("--output_dir must differ from --adapter (the adapter is kept)")
    base = os.fspath(base_model) if base_model is not None else adapter_base_model(src)
    model, processor, adapter = load_backbone(
        src, dtype=torch_dtype(dtype), merge=True, base_model=base
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    processor.save_pretrained(out)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and not (out / "preprocessor_config.json").is_file():
        image_processor.save_pretrained(out)
    settings = load_tag_settings(src)
    if settings is None and os.path.isdir(os.path.expanduser(base)):
        settings = load_tag_settings(os.path.expanduser(base))
    if settings is not None:
        if settings.family != adapter.family:
            raise ValueError(
                f"{src}/tag_settings.json says family {settings.family!r} but the merged "
                f"model is {adapter.family!r}"
            )
        save_tag_settings(out, settings)
    else:
        logger.warning(
            "neither %s nor its base %s has tag_settings.json: %s has none (tag-eval then "
            "needs the label set and prompt style on its command line)",
            src,
            base,
            out,
        )
    missing = check_hf_layout(out)
    if missing:
        raise RuntimeError(f"{out}: the merged checkpoint lacks {', '.join(missing)}")
    return MergeResult(out, sorted(p.name for p in out.iterdir()), settings, base)


def run_merge(args: MergeArguments) -> MergeResult:
    """``tag-train merge`` with parsed arguments."""
    return merge_adapter(
        args.adapter,
        args.output_dir,
        dtype=args.dtype,
        base_model=args.base_model,
        max_shard_size=args.max_shard_size,
    )
