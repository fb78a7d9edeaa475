"""Batched generation engines: transformers (default) and vLLM (optional, lazy import).

Both take a list of PIL images and a prompt builder and return decoded completions, greedy
(``do_sample=False`` / ``temperature=0``) so that a run is deterministic under its seed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tag_eval._records import EvalInputError

__all__ = ["Generation", "Generator", "check_model_ref", "load_generator"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_model_ref(model: str) -> str:
    """Validate ``--model``: an existing directory, or something shaped like a hub id.

    Anything else that does not exist (absolute, ``./``-relative, ``~``, more than one
    ``/``) is a missing path and raises :class:`EvalInputError`.
    """
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir():
            raise EvalInputError(f"model path {p} is a file; pass the checkpoint directory")
        if not (p / "config.json").exists():
            raise EvalInputError(f"model directory {p} has no config.json: not a checkpoint")
        return str(p)
    if (
        model.startswith(("/", ".", "~"))
        or os.sep in model.replace("/", "")
        or not _HUB_ID.match(model)
    ):
        raise EvalInputError(f"model path not found: {model}")
    return model


@dataclass
class Generation:
    """One completion: decoded text, token counts and the batch's wall time."""

    text: str
    prompt_tokens: int
    new_tokens: int
    batch_seconds: float
    batch_size: int


class Generator:
    """Common interface; see :func:`load_generator`."""

    family: str
    adapter: Any
    name: str

    def generate(
        self, images: Sequence[Any], messages: Callable[[Any], list[dict[str, Any]]]
    ) -> list[Generation]:
        raise NotImplementedError


class TransformersGenerator(Generator):
    """``AutoModelForImageTextToText`` + processor via :func:`tag_model.backbones.load_backbone`."""

    def __init__(
        self,
        model_ref: str,
        *,
        family: str | None,
        max_new_tokens: int,
        seed: int,
        device: str | None = None,
    ) -> None:
        import torch
        from tag_model.backbones import load_backbone

        self.model, self.processor, self.adapter = load_backbone(model_ref, family=family)
        self.family = self.adapter.family
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device)
        self.model.eval()
        tok = getattr(self.processor, "tokenizer", self.processor)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.name = model_ref

    def generate(
        self, images: Sequence[Any], messages: Callable[[Any], list[dict[str, Any]]]
    ) -> list[Generation]:
        import torch
        from tag_model.backbones import build_prompt_text

        texts = [build_prompt_text(self.processor, messages(im)) for im in images]
        inputs = self.processor(
            text=texts, images=list(images), padding=True, return_tensors="pt"
        ).to(self.device)
        torch.manual_seed(self.seed)
        tok = getattr(self.processor, "tokenizer", self.processor)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        n_prompt = inputs["input_ids"].shape[1]
        gen = out[:, n_prompt:]
        decoded = tok.batch_decode(gen, skip_special_tokens=True)
        attn = inputs["attention_mask"].sum(1).tolist()
        eos = {tok.eos_token_id, tok.pad_token_id} - {None}
        results = []
        for i, text in enumerate(decoded):
            row = gen[i].tolist()
            n_new = next((j for j, t in enumerate(row) if t in eos), len(row))
            results.append(Generation(text, int(attn[i]), int(n_new), dt, len(images)))
        return results


class VLLMGenerator(Generator):
    """vLLM offline engine (``pip install vllm``); greedy sampling with a fixed seed."""

    def __init__(self, model_ref: str, *, family: str | None, max_new_tokens: int, seed: int):
        try:
            import vllm
        except ImportError as exc:
            raise EvalInputError(
                "--engine vllm needs the vllm package (pip install vllm); "
                "use --engine transformers otherwise"
            ) from exc
        from tag_model.backbones import get_adapter
        from transformers import AutoConfig, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_ref)
        if family is None:
            family = AutoConfig.from_pretrained(model_ref).model_type
        self.family = family
        self.adapter = get_adapter(family, processor=self.processor)
        self.llm = vllm.LLM(model=model_ref, seed=seed)
        self.params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, seed=seed)
        self.name = model_ref

    def generate(
        self, images: Sequence[Any], messages: Callable[[Any], list[dict[str, Any]]]
    ) -> list[Generation]:
        from tag_model.backbones import build_prompt_text

        prompts = [
            {
                "prompt": build_prompt_text(self.processor, messages(im)),
                "multi_modal_data": {"image": im},
            }
            for im in images
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, self.params, use_tqdm=False)
        dt = time.perf_counter() - t0
        return [
            Generation(
                o.outputs[0].text,
                len(o.prompt_token_ids or []),
                len(o.outputs[0].token_ids),
                dt,
                len(images),
            )
            for o in outs
        ]


def load_generator(
    model_ref: str,
    *,
    engine: str = "transformers",
    family: str | None = None,
    max_new_tokens: int = 512,
    seed: int = 0,
    device: str | None = None,
) -> Generator:
    """Build the generation engine for ``model_ref`` (checked with :func:`check_model_ref`)."""
    ref = check_model_ref(model_ref)
    if engine == "transformers":
        try:
            return TransformersGenerator(
                ref, family=family, max_new_tokens=max_new_tokens, seed=seed, device=device
            )
        except (OSError, ValueError) as exc:
            if isinstance(exc, EvalInputError):
                raise
            raise EvalInputError(f"could not load model {model_ref!r}: {exc}") from exc
    if engine == "vllm":
        return VLLMGenerator(ref, family=family, max_new_tokens=max_new_tokens, seed=seed)
    raise EvalInputError(f"unknown engine {engine!r}; use 'transformers' or 'vllm'")
