"""Local Hugging Face VLM teacher (``transformers`` ``generate``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from tag_train.teachers._base import TeacherReply, TeacherRequest

__all__ = ["HFTeacher"]


class HFTeacher:
    """Teacher backed by a local image-text-to-text model.

    Args:
        model: a loaded ``transformers`` VLM (e.g. ``AutoModelForImageTextToText``).
        processor: its processor (chat template + image processor).
        max_new_tokens, temperature, do_sample: generation settings.
        batch_size: requests per ``generate`` call (left padding).

    Use :meth:`from_pretrained` to load by local path or hub id through the Auto classes.
    Generation errors (bad weights, OOM) come back as ``TeacherReply("", meta={"error": ...})``.
    """

    uses_gold_label = False

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.7,
        do_sample: bool = True,
        batch_size: int = 8,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.do_sample = do_sample
        self.batch_size = batch_size
        path = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        self.name = name or f"hf:{path}"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        dtype: Any = "auto",
        attn_implementation: str | None = None,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        device_map: Any = "auto-if-cuda",
        revision: str | None = None,
        **kwargs: Any,
    ) -> HFTeacher:
        """Load a teacher by local path or hub id (``AutoModelForImageTextToText`` + ``AutoProcessor``).

        The loading options are those of ``tag-train sft|rl`` (TRL ``ModelConfig`` names):
        ``dtype`` (``"auto"``: the checkpoint's, bfloat16 for the released Qwen-VL
        weights), ``attn_implementation``, ``load_in_4bit`` / ``load_in_8bit``
        (bitsandbytes, CUDA only: a clear error otherwise), ``min_pixels`` / ``max_pixels``
        (the image processor's budget). ``device_map`` defaults to ``"auto"`` on a CUDA
        machine (the weights spread over the GPUs) and to None (CPU) elsewhere. Other
        keyword arguments go to the constructor (``max_new_tokens``, ``batch_size``, ...).
        """
        from tag_model.backbones import load_processor
        from transformers import AutoModelForImageTextToText

        from tag_train._model_options import processor_kwargs, quantization_config, torch_dtype

        cuda = torch.cuda.is_available()
        if device_map == "auto-if-cuda":
            device_map = "auto" if cuda else None
        quant = quantization_config(
            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype
        )
        load_kw: dict[str, Any] = {"dtype": torch_dtype(dtype), "device_map": device_map}
        if attn_implementation:
            load_kw["attn_implementation"] = attn_implementation
        if quant is not None:
            load_kw["quantization_config"] = quant
        hub = {"revision": revision} if revision else {}
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **load_kw, **hub)
        processor = load_processor(name_or_path, **hub, **processor_kwargs(min_pixels, max_pixels))
        return cls(model.eval(), processor, **kwargs)

    def _messages(self, request: TeacherRequest) -> list[dict[str, Any]]:
        return [
            {"role": "system", "content": [{"type": "text", "text": request.system}]},
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": request.user}],
            },
        ]

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        out: list[TeacherReply] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._batch(requests[start : start + self.batch_size]))
        return out

    @torch.no_grad()
    def _batch(self, requests: Sequence[TeacherRequest]) -> list[TeacherReply]:
        t0 = time.perf_counter()
        meta_base = {"teacher": self.name, "model": self.name.removeprefix("hf:")}
        try:
            texts = [
                self.processor.apply_chat_template(
                    self._messages(r), add_generation_prompt=True, tokenize=False
                )
                for r in requests
            ]
            images = [[r.image.convert("RGB")] for r in requests]
            tok = getattr(self.processor, "tokenizer", self.processor)
            old_side = getattr(tok, "padding_side", "right")
            tok.padding_side = "left"
            try:
                inputs = self.processor(
                    text=texts, images=images, return_tensors="pt", padding=True
                )
            finally:
                tok.padding_side = old_side
            device = next(self.model.parameters()).device
            inputs = inputs.to(device)
            gen_kwargs: dict[str, Any] = {
                "max_new_tokens": self.max_new_tokens,
                "do_sample": self.do_sample,
                "pad_token_id": tok.pad_token_id,
            }
            if self.do_sample:
                gen_kwargs["temperature"] = self.temperature
            ids = self.model.generate(**inputs, **gen_kwargs)
            new = ids[:, inputs["input_ids"].shape[1] :]
            decoded = tok.batch_decode(new, skip_special_tokens=True)
        except Exception as exc:  # a broken model must not stop a build
            meta = {**meta_base, "error": f"{type(exc).__name__}: {exc}"}
            return [TeacherReply("", dict(meta)) for _ in requests]
        latency = (time.perf_counter() - t0) / max(1, len(requests))
        return [
            TeacherReply(
                text,
                {
                    **meta_base,
                    "latency_s": latency,
                    "completion_tokens": int((row != tok.pad_token_id).sum()),
                },
            )
            for text, row in zip(decoded, new, strict=True)
        ]
