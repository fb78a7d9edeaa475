"""Batched generation engines: transformers (default), vLLM (optional, lazy import) and any
OpenAI-compatible endpoint (``tag_model.chat``; how closed models are scored).

Each takes a list of PIL images and a prompt builder and returns decoded completions, greedy
(``do_sample=False`` / ``temperature=0``) so that a local run is deterministic under its seed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tag_eval._records import EvalInputError, EvalModelError

__all__ = [
    "MODEL_PLUGINS",
    "Generation",
    "Generator",
    "OpenAIGenerator",
    "check_model_ref",
    "generator_from_config",
    "load_generator",
    "model_folder",
    "plugin_spec",
]

#: Entry-point group of model plugins: ``--model NAME:PATH`` loads entry point ``NAME`` (a class
#: built as ``cls(PATH)`` with ``family``, ``adapter``, ``name`` and ``generate(images,
#: messages)``). tag-train registers ``student`` (``tag-eval run --model student:DIR``).
MODEL_PLUGINS = "tag_eval.models"


def plugin_spec(model: str) -> tuple[str, str] | None:
    """``(name, path)`` when ``model`` is ``NAME:PATH`` with ``NAME`` a registered
    :data:`MODEL_PLUGINS` entry point, else ``None``."""
    from importlib.metadata import entry_points

    name, sep, path = model.partition(":")
    if not sep or not name or "/" in name:
        return None
    if not entry_points(group=MODEL_PLUGINS, name=name):
        if name == "student":  # the one TAG ships: say what is missing
            raise EvalModelError(
                "--model student:DIR needs tag-train installed (it registers the student "
                f"plugin in the {MODEL_PLUGINS!r} entry points)"
            )
        return None
    return name, path


def model_folder(model: str) -> Path:
    """The local folder a model reference names (``NAME:PATH`` -> ``PATH``)."""
    spec = plugin_spec(model)
    return Path(spec[1] if spec else model).expanduser()


def _load_plugin(name: str, path: str) -> Generator:
    from importlib.metadata import entry_points

    (ep,) = entry_points(group=MODEL_PLUGINS, name=name)
    if not Path(path).expanduser().is_dir():
        raise EvalModelError(f"{name} model folder not found: {path}")
    try:
        return ep.load()(str(Path(path).expanduser()))
    except FileNotFoundError as exc:
        raise EvalModelError(f"could not load {name}:{path}: {exc}") from exc


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _checkpoint_kind(path: Path) -> str | None:
    """``"full"``, ``"adapter"`` or ``None`` (through ``tag_model.backbones.checkpoint_kind``
    where this tag-model has it; else a full checkpoint is a folder with ``config.json``)."""
    try:
        from tag_model.backbones import checkpoint_kind
    except ImportError:
        return "full" if (path / "config.json").exists() else None
    return checkpoint_kind(path)


def check_model_ref(model: str, *, engine: str = "transformers") -> str:
    """Validate ``--model_name_or_path``: a checkpoint folder, or something shaped like a hub id.

    A folder must hold a full checkpoint (``config.json``) or, where ``tag_model.backbones``
    loads them, a LoRA adapter (``adapter_config.json``; not for ``--engine vllm``). Anything
    else that does not exist (absolute, ``./``-relative, ``~``, more than one ``/``) is a
    missing path. Both raise :class:`EvalModelError`.
    """
    spec = plugin_spec(model)
    if spec is not None:
        if not Path(spec[1]).expanduser().is_dir():
            raise EvalModelError(f"{spec[0]} model folder not found: {spec[1]}")
        return model
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir():
            raise EvalModelError(f"model path {p} is a file; pass the checkpoint directory")
        kind = _checkpoint_kind(p)
        if kind is None:
            if (p / "adapter_config.json").exists():
                raise EvalModelError(
                    f"model directory {p} is a LoRA adapter, which this tag-model cannot "
                    "load; merge it into its base model first"
                )
            if (p / "config.json").exists():
                raise EvalModelError(
                    f"model directory {p} has a config.json but no weights "
                    "(model.safetensors, pytorch_model.bin): not a checkpoint"
                )
            raise EvalModelError(
                f"model directory {p} has no config.json (nor adapter_config.json): "
                "not a checkpoint"
            )
        if kind == "adapter" and engine == "vllm":
            raise EvalModelError(
                f"model directory {p} is a LoRA adapter; --engine vllm needs a full "
                "checkpoint (merge the adapter first, or use --engine transformers)"
            )
        return str(p)
    if (
        model.startswith(("/", ".", "~"))
        or os.sep in model.replace("/", "")
        or not _HUB_ID.match(model)
    ):
        raise EvalModelError(f"model path not found: {model}")
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
        # one image list per prompt: Gemma 3 and SmolVLM processors count images per sample
        inputs = self.processor(
            text=texts, images=[[im] for im in images], padding=True, return_tensors="pt"
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

    def __init__(
        self,
        model_ref: str,
        *,
        family: str | None,
        max_new_tokens: int,
        seed: int,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise EvalInputError(
                "--engine vllm needs the vllm package (pip install vllm); "
                "use --engine transformers otherwise"
            ) from exc
        from tag_model.backbones import get_adapter, load_processor
        from transformers import AutoConfig

        self.processor = load_processor(model_ref)
        if family is None:
            family = AutoConfig.from_pretrained(model_ref).model_type
        self.family = family
        self.adapter = get_adapter(family, processor=self.processor)
        engine_args: dict[str, Any] = {
            "model": model_ref,
            "seed": seed,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
        }
        if max_model_len is not None:
            engine_args["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**engine_args)
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


class OpenAIGenerator(Generator):
    """Any OpenAI-compatible chat endpoint (vLLM or SGLang servers, hosted APIs) through
    :class:`tag_model.chat.ChatClient`: the same prompts as the local engines, the image sent
    as a data URL, ``temperature`` 0 and the run's seed; up to ``concurrency`` requests in
    flight per batch. A request that still fails after its retries raises
    :class:`tag_model.chat.ChatError` (finished batches are kept; rerun to resume).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        family: str | None = None,
        max_new_tokens: int = 512,
        seed: int = 0,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        transport: Any = None,
    ) -> None:
        from tag_model.backbones import DEFAULT_PROMPT_FAMILY, get_adapter
        from tag_model.chat import ChatClient, ChatConfig

        if not base_url:
            raise EvalInputError("--engine openai needs --base_url (the API root)")
        try:
            self.adapter = get_adapter(family or DEFAULT_PROMPT_FAMILY)
            config = ChatConfig(
                base_url,
                model,
                api_key_env=api_key_env or None,
                timeout=timeout,
                max_retries=max_retries,
                concurrency=concurrency,
                params={"temperature": 0.0, "max_tokens": max_new_tokens, "seed": seed},
            )
        except ValueError as exc:
            raise EvalInputError(f"--engine openai: {exc}") from exc
        self.family = self.adapter.family
        self.client = ChatClient(config, transport=transport)
        self.name = model

    @staticmethod
    def to_openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chat messages with PIL image parts as OpenAI ``image_url`` data-URL parts."""
        from tag_model.chat import image_data_url

        out = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image":
                        url = image_data_url(part["image"])
                        parts.append({"type": "image_url", "image_url": {"url": url}})
                    else:
                        parts.append(part)
                m = {**m, "content": parts}
            out.append(m)
        return out

    def generate(
        self, images: Sequence[Any], messages: Callable[[Any], list[dict[str, Any]]]
    ) -> list[Generation]:
        from tag_model.chat import ChatRequest

        reqs = [
            ChatRequest(self.to_openai(messages(im)), label=f"image {i}")
            for i, im in enumerate(images)
        ]
        t0 = time.perf_counter()
        replies = self.client.map_complete(reqs)
        dt = time.perf_counter() - t0
        return [
            Generation(
                r.text,
                int(r.usage.get("prompt_tokens") or 0),
                int(r.usage.get("completion_tokens") or 0),
                dt,
                len(images),
            )
            for r in replies
        ]

    def close(self) -> None:
        self.client.close()


def load_generator(
    model_ref: str,
    *,
    engine: str = "transformers",
    family: str | None = None,
    max_new_tokens: int = 512,
    seed: int = 0,
    device: str | None = None,
    **options: Any,
) -> Generator:
    """Build the generation engine for ``model_ref`` (checked with :func:`check_model_ref`).

    ``options``: for ``vllm`` ``tensor_parallel_size``, ``gpu_memory_utilization``,
    ``max_model_len``; for ``openai`` (``model_ref`` is the served name) ``base_url``,
    ``api_key_env``, ``concurrency``, ``timeout``, ``max_retries``.
    """
    if engine == "openai":
        return OpenAIGenerator(
            model_ref, family=family, max_new_tokens=max_new_tokens, seed=seed, **options
        )
    ref = check_model_ref(model_ref, engine=engine)
    spec = plugin_spec(ref)
    if spec is not None:  # NAME:PATH, e.g. student:DIR (the engine is the plugin's own)
        return _load_plugin(*spec)
    if engine == "transformers":
        from tag_model.backbones import BackboneNotFoundError, UnknownFamilyError

        try:
            return TransformersGenerator(
                ref, family=family, max_new_tokens=max_new_tokens, seed=seed, device=device
            )
        except EvalInputError:
            raise
        except UnknownFamilyError as exc:
            raise EvalInputError(f"unknown family for {model_ref!r}: {exc}") from exc
        except (BackboneNotFoundError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EvalModelError(f"could not load model {model_ref!r}: {first}") from exc
        except ValueError as exc:
            raise EvalInputError(f"could not load model {model_ref!r}: {exc}") from exc
    if engine == "vllm":
        return VLLMGenerator(
            ref, family=family, max_new_tokens=max_new_tokens, seed=seed, **options
        )
    raise EvalInputError(f"unknown engine {engine!r}; use transformers, vllm or openai")


def generator_from_config(cfg: Any) -> Generator:
    """:func:`load_generator` with the engine options of a :class:`tag_eval.run.RunConfig`."""
    options: dict[str, Any] = {}
    if cfg.engine == "vllm":
        options = {
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "max_model_len": cfg.max_model_len,
        }
    elif cfg.engine == "openai":
        options = {
            "base_url": cfg.base_url,
            "api_key_env": cfg.api_key_env,
            "concurrency": cfg.concurrency,
            "timeout": cfg.timeout,
            "max_retries": cfg.max_http_retries,
        }
    return load_generator(
        cfg.model_name_or_path,
        engine=cfg.engine,
        family=cfg.family,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        device=cfg.device,
        **options,
    )
