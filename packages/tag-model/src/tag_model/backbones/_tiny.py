"""Tiny, randomly initialised VLM backbones built entirely offline.

``make_tiny_vlm(family)`` gives a real ``*ForConditionalGeneration`` model of the family
(about 2 M parameters), a byte-level BPE tokenizer trained here with ``tokenizers`` on a
generated corpus of TAG traces, and the family's real processor class, with the PIL
image processor (so no torchvision is needed). The result round-trips through
``save_pretrained`` and the transformers Auto classes, so tests and the demo exercise the
same code path as a real checkpoint.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

from ._families import QWEN_FAMILIES, detect_family, family_spec

__all__ = [
    "TINY_SPECIAL_TOKENS",
    "build_tiny_tokenizer",
    "load_processor",
    "make_tiny_vlm",
    "qwen_chat_template",
    "tokenizer_corpus",
]

#: Special tokens of the tiny tokenizer: the Qwen-VL control and vision tokens.
TINY_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
)

# The Qwen chat layout: <|im_start|>role\n...<|im_end|>\n, images as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands <|image_pad|>).
_TEMPLATE = r"""{%- set image_count = namespace(value=0) -%}
{%- set video_count = namespace(value=0) -%}
{%- for message in messages -%}
{%- if loop.first and message['role'] != 'system' and __DEFAULT_SYSTEM__ -%}
{{- '<|im_start|>system\n' + __DEFAULT_SYSTEM__ + '<|im_end|>\n' -}}
{%- endif -%}
{{- '<|im_start|>' + message['role'] + '\n' -}}
{%- if message['content'] is string -%}
{{- message['content'] -}}
{%- else -%}
{%- for part in message['content'] -%}
{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}
{%- set image_count.value = image_count.value + 1 -%}
{%- if add_vision_id -%}{{- 'Picture ' + image_count.value|string + ': ' -}}{%- endif -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif part['type'] == 'video' or 'video' in part -%}
{%- set video_count.value = video_count.value + 1 -%}
{%- if add_vision_id -%}{{- 'Video ' + video_count.value|string + ': ' -}}{%- endif -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in part -%}
{{- part['text'] -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}"""


def qwen_chat_template(family: str) -> str:
    """A Qwen-style chat template (Jinja) for ``family`` that renders image content parts.

    Qwen2-VL and Qwen2.5-VL insert ``"You are a helpful assistant."`` when no system
    message is given; Qwen3-VL inserts none, as the released templates do.
    """
    default = family_spec(family).default_system
    return _TEMPLATE.replace("__DEFAULT_SYSTEM__", json.dumps(default) if default else "false")


# --------------------------------------------------------------------------- corpus
_REGIONS = (
    ("inner brows", "raised at the centre", (1,)),
    ("outer brows", "lifted at the tails", (2,)),
    ("brows", "lowered and drawn together", (4,)),
    ("glabella and nose", "vertical furrows and a wrinkled nose", (4, 9)),
    ("upper eyelids", "widened, white visible above the iris", (5,)),
    ("cheeks and lower eyelids", "cheeks raised with crow's feet", (6,)),
    ("lower eyelids", "tightened", (7,)),
    ("nose", "wrinkled along the bridge", (9,)),
    ("upper lip", "raised", (10,)),
    ("lip corners", "pulled up and back", (12,)),
    ("cheeks", "dimples beside the lip corners", (14,)),
    ("lip corners", "pulled down", (15,)),
    ("chin", "raised, bulging boss", (17,)),
    ("lips", "stretched horizontally", (20,)),
    ("lips", "pressed together", (23, 24)),
    ("mouth", "lips parted", (25,)),
    ("jaw", "dropped open", (26,)),
    ("mouth", "one lip corner raised", (12, 14)),
)
_AU_NAMES = (
    "Inner Brow Raiser",
    "Outer Brow Raiser",
    "Brow Lowerer",
    "Upper Lid Raiser",
    "Cheek Raiser",
    "Lid Tightener",
    "Nose Wrinkler",
    "Upper Lip Raiser",
    "Lip Corner Puller",
    "Dimpler",
    "Lip Corner Depressor",
    "Chin Raiser",
    "Lip Stretcher",
    "Lip Tightener",
    "Lip Pressor",
    "Lips Part",
    "Jaw Drop",
    "Mouth Stretch",
    "Blink",
)
_EMOTIONS = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
    "happy",
    "sad",
    "surprised",
    "fearful",
    "afraid",
    "disgusted",
    "angry",
    "calm",
)
_GLOBAL = (
    "The face looks relaxed with a soft gaze.",
    "The whole face is animated: the mouth is open and the eyes are wide.",
    "The expression is tense around the eyes and the mouth.",
    "The face shows a clear smile that reaches the eyes.",
    "The brows and mouth suggest a negative expression.",
    "The features are asymmetric around the mouth.",
)


def tokenizer_corpus(n_traces: int = 400, seed: int = 0) -> list[str]:
    """A generated corpus for the tiny tokenizer: TAG traces, AU names, emotions, digits, prompts."""
    from ._prompts import grounded_instruction, zero_shot_instruction

    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(n_traces):
        steps = []
        for region, obs, aus in rng.sample(_REGIONS, rng.randint(1, 6)):
            x1, y1 = rng.randint(0, 900), rng.randint(0, 900)
            x2, y2 = x1 + rng.randint(5, 300), y1 + rng.randint(5, 300)
            au_txt = " ".join(f"AU{a}" for a in aus)
            steps.append(f"Inspect {region} → {obs} → {au_txt} <bbox>[{x1},{y1},{x2},{y2}]</bbox>")
        label = rng.choice(_EMOTIONS[:8])
        all_aus = sorted(
            {a for s in steps for a in (int(t[2:]) for t in s.split() if t[:2] == "AU")}
        )
        combo = " + ".join(f"AU{a}" for a in all_aus)
        lines.append(
            f"Global analysis: {rng.choice(_GLOBAL)}\n"
            "Verification loop:\n" + "\n".join(steps) + "\n"
            f"Final conclusion: Combined {combo} indicate a dominant emotion of {label}.\n"
            f"<answer> {label} </answer>"
        )
    lines.extend(f"AU{n} {name}" for n, name in enumerate(_AU_NAMES, start=1))
    lines.extend(" ".join(_EMOTIONS) for _ in range(20))
    lines.extend(" ".join(str(rng.randint(0, 1000)) for _ in range(40)) for _ in range(20))
    labels = _EMOTIONS[:8]
    for fam in ("qwen2_vl", "qwen2_5_vl"):
        lines.extend([grounded_instruction(labels, family=fam, image_size=(112, 112))] * 20)
    lines.extend([zero_shot_instruction(labels)] * 20)
    lines.extend(["system\nYou are a helpful assistant.", "user\n", "assistant\n"] * 20)
    return lines


@functools.cache
def _tokenizer_json(
    vocab_size: int, seed: int, specials: tuple[str, ...] = TINY_SPECIAL_TOKENS
) -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(seed=seed), trainer)
    return tok.to_str()


def build_tiny_tokenizer(family: str = "qwen2_vl", *, vocab_size: int = 1024, seed: int = 0) -> Any:
    """A ``Qwen2Tokenizer`` with a byte-level BPE vocabulary trained offline.

    It carries :data:`TINY_SPECIAL_TOKENS` (``<|im_end|>`` is EOS, ``<|endoftext|>`` pads)
    and the family's chat template. Training runs once per process and is cached.
    """
    from transformers import Qwen2Tokenizer

    model = json.loads(_tokenizer_json(vocab_size, seed))["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(m) for m in model["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[
            t for t in TINY_SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")
        ],
        model_max_length=4096,
    )
    tokenizer.chat_template = qwen_chat_template(family)
    return tokenizer


# --------------------------------------------------------------------------- processor
def _torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


@functools.cache
def _placeholder_video_processor_class() -> type:
    from transformers.video_processing_utils import VideoProcessorMixin

    class ImageOnlyVideoProcessor(VideoProcessorMixin):
        """Stands in for the family's video processor when torchvision is absent.

        The Qwen-VL processors require a video processor, and transformers' video
        processors require torchvision. TAG feeds images only; video input raises.
        Saved, it names the family's real video processor class, so a folder saved
        without torchvision loads normally where torchvision is installed.
        """

        model_input_names = ("pixel_values_videos", "video_grid_thw")

        def __init__(
            self,
            *,
            real_class: str = "Qwen2VLVideoProcessor",
            patch_size: int = 14,
            merge_size: int = 2,
            temporal_patch_size: int = 2,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.real_class = real_class
            self.patch_size = patch_size
            self.merge_size = merge_size
            self.temporal_patch_size = temporal_patch_size

        def preprocess(self, videos: Any, **kwargs: Any) -> Any:
            raise ImportError(
                "video input needs torchvision (transformers' Qwen-VL video processors use it); "
                "install torchvision, or pass images only"
            )

        def to_dict(self) -> dict[str, Any]:
            out = super().to_dict()
            out["video_processor_type"] = out.pop("real_class", self.real_class)
            return out

    return ImageOnlyVideoProcessor


@functools.cache
def _image_only_processor_class(name: str) -> type:
    """The family's processor class, accepting :class:`ImageOnlyVideoProcessor`.

    Without torchvision, transformers cannot resolve its own ``VideoProcessorMixin``
    when a processor checks its arguments. This subclass relaxes only that check for the
    video slot. It keeps the real class name, so a saved processor names the real class.
    """
    import transformers

    base = getattr(transformers, name)
    placeholder = _placeholder_video_processor_class()

    def check_argument_for_proper_class(self: Any, argument_name: str, argument: Any) -> Any:
        if argument_name == "video_processor" and isinstance(argument, placeholder):
            return placeholder
        return base.check_argument_for_proper_class(self, argument_name, argument)

    return type(
        name,
        (base,),
        {
            "check_argument_for_proper_class": check_argument_for_proper_class,
            "__module__": __name__,
            "__doc__": f"{name} that accepts an image-only video processor (no torchvision).",
        },
    )


def _make_processor(
    family: str, tokenizer: Any, *, patch_size: int, merge_size: int, image_size: int
) -> Any:
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    spec = family_spec(family)
    factor = patch_size * merge_size
    side = max(factor, round(image_size / factor) * factor)
    pixel_kwargs = dict(
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=spec.temporal_patch_size,
    )
    if family == "qwen3_vl":  # Qwen3-VL's processors normalise with mean = std = 0.5
        pixel_kwargs.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=factor * factor, max_pixels=side * side, **pixel_kwargs
    )
    if _torchvision_available():
        video_cls = getattr(transformers, spec.video_processor_class)
        video_processor = video_cls(
            size={"shortest_edge": factor * factor, "longest_edge": side * side * 2},
            **pixel_kwargs,
        )
        processor_cls = getattr(transformers, spec.processor_class)
    else:
        video_processor = _placeholder_video_processor_class()(
            real_class=spec.video_processor_class, **pixel_kwargs
        )
        processor_cls = _image_only_processor_class(spec.processor_class)
    return processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=qwen_chat_template(family),
    )


def load_processor(name_or_path: str | Path, *, family: str | None = None, **kwargs: Any) -> Any:
    """``AutoProcessor.from_pretrained``, falling back to an image-only build without torchvision.

    transformers' Qwen-VL processors need a video processor, and its video processors
    need torchvision. Where torchvision is absent, this loads the image processor with
    the PIL backend, the tokenizer and the chat template, and puts an image-only
    placeholder in the video slot (video input then raises). An InternVL tokenizer's
    grounding tags (``<box>``, ``</box>``, ``<ref>``, ...) are made ordinary tokens
    (:func:`._tiny_families.keep_grounding_tags`), so that decoding with
    ``skip_special_tokens=True`` keeps the boxes the model writes. ``family`` names the
    backbone family when the folder has no ``config.json`` to read it from (a LoRA
    adapter folder with a saved processor).
    """
    from transformers import AutoProcessor

    from ._tiny_families import ensure_smolvlm_processor

    ensure_smolvlm_processor()  # SmolVLM's processor: images work without num2words
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
    except ImportError:
        if _torchvision_available():
            raise
    else:
        if type(processor).__name__ == "InternVLProcessor":  # keep <box>..</box> when decoding
            from ._tiny_families import keep_grounding_tags

            keep_grounding_tags(processor.tokenizer)
        return processor
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    spec = family_spec(
        family if family is not None else detect_family(AutoConfig.from_pretrained(name_or_path))
    )
    if spec.name not in QWEN_FAMILIES:
        raise ImportError(
            f"the {spec.display_name} processor needs torchvision for its video processor "
            "(transformers' video processors use it); install torchvision"
        )
    image_processor = AutoImageProcessor.from_pretrained(name_or_path, backend="pil", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    template = getattr(tokenizer, "chat_template", None)
    local = Path(name_or_path)
    if local.is_dir() and (local / "chat_template.jinja").is_file():
        template = (local / "chat_template.jinja").read_text(encoding="utf-8")
    patch = image_processor.patch_size
    video_processor = _placeholder_video_processor_class()(
        real_class=spec.video_processor_class,
        patch_size=patch[0] if isinstance(patch, (list, tuple)) else patch,
        merge_size=image_processor.merge_size,
        temporal_patch_size=image_processor.temporal_patch_size,
    )
    return _image_only_processor_class(spec.processor_class)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )


# --------------------------------------------------------------------------- model
def _tiny_config(
    family: str,
    tokenizer: Any,
    *,
    text_hidden: int,
    text_layers: int,
    text_heads: int,
    text_kv_heads: int,
    text_intermediate: int,
    vision_depth: int,
    vision_width: int,
    vision_heads: int,
    patch_size: int,
    merge_size: int,
    image_size: int,
) -> Any:
    import transformers

    spec = family_spec(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in TINY_SPECIAL_TOKENS}
    head_dim = text_hidden // text_heads
    if head_dim * text_heads != text_hidden or head_dim % 4:
        raise ValueError(
            f"text_hidden={text_hidden} must split into text_heads={text_heads} heads whose "
            "size is a multiple of 4 (for multimodal RoPE)"
        )
    half = head_dim // 2
    text: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=text_intermediate,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=text_kv_heads,
        max_position_embeddings=4096,
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision: dict[str, Any] = dict(
        depth=vision_depth,
        num_heads=vision_heads,
        patch_size=patch_size,
        spatial_merge_size=merge_size,
        temporal_patch_size=spec.temporal_patch_size,
    )
    if family in ("qwen2_vl", "qwen2_5_vl"):
        # Qwen2-VL splits the rotary half-dim 1/4 : 3/8 : 3/8 over (t, h, w).
        t = half // 4
        h = (half - t) // 2
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": [t, h, half - t - h],
        }
    if family == "qwen2_vl":
        vision.update(embed_dim=vision_width, hidden_size=text_hidden, mlp_ratio=2)
    elif family == "qwen2_5_vl":
        vision.update(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            out_hidden_size=text_hidden,
            window_size=patch_size * merge_size * 2,  # 2x2 merged tokens per window
            fullatt_block_indexes=[vision_depth - 1],
        )
    else:  # qwen3_vl
        third = half // 3
        text.update(head_dim=head_dim)
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [half - 2 * third, third, third],
            "mrope_interleaved": True,
        }
        factor = patch_size * merge_size
        grid = max(1, round(image_size / factor)) * merge_size
        vision.update(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            out_hidden_size=text_hidden,
            num_position_embeddings=grid * grid,
            deepstack_visual_indexes=[max(0, vision_depth // 2 - 1)],
        )
    config_cls = getattr(transformers, spec.config_class)
    return config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def make_tiny_vlm(
    family: str,
    *,
    save_dir: str | Path | None = None,
    seed: int = 0,
    image_size: int = 112,
    text_hidden: int = 192,
    text_layers: int = 4,
    text_heads: int = 4,
    text_kv_heads: int = 2,
    text_intermediate: int = 384,
    vision_depth: int = 3,
    vision_width: int = 96,
    vision_heads: int = 4,
    patch_size: int | None = None,
    merge_size: int = 2,
    vocab_size: int = 1024,
    dtype: Any = None,
) -> tuple[Any, Any]:
    """Build a tiny randomly initialised VLM of ``family`` and its processor, offline.

    Args:
        family: any of :data:`FAMILIES` (aliases accepted). The non-Qwen families
            (``"internvl"``, ``"llava_onevision"``, ``"gemma3"``, ``"smolvlm"``) get their
            own special tokens, chat template and tiled image pipeline with tiles of
            ``image_size // 2`` pixels (see :mod:`._tiny_families`).
        save_dir: if given, ``save_pretrained`` the model and processor there, loadable
            with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
        seed: seeds the weights (and nothing global beyond ``torch.manual_seed`` scope).
        image_size: the side (pixels) of the images the tests use; the image processor's
            ``max_pixels`` is set so that such an image gives ``(image_size/28)**2``
            visual tokens (16 for 112 px; Qwen3-VL: 16 px patches, 128-px input).
        text_hidden, text_layers, text_heads, text_kv_heads, text_intermediate: the
            language model's size.
        vision_depth, vision_width, vision_heads: the vision tower's size.
        patch_size: vision patch side (default: the family's, 14 or 16).
        merge_size: spatial merge of the projector (2 in every released model).
        vocab_size: target size of the trained BPE vocabulary.
        dtype: a torch dtype for the weights (default float32).

    Returns:
        ``(model, processor)``: the family's ``*ForConditionalGeneration`` in eval mode
        and its ``*Processor`` (PIL image processor, tiny tokenizer, chat template).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    spec = family_spec(family)
    family = spec.name
    if family not in QWEN_FAMILIES:
        from ._tiny_families import make_tiny

        model, processor = make_tiny(
            family,
            seed=seed,
            image_size=image_size,
            text_hidden=text_hidden,
            text_layers=text_layers,
            text_heads=text_heads,
            text_kv_heads=text_kv_heads,
            text_intermediate=text_intermediate,
            vision_depth=vision_depth,
            vision_width=vision_width,
            vision_heads=vision_heads,
            patch_size=patch_size,
            vocab_size=vocab_size,
            dtype=dtype,
        )
        return _saved(model, processor, save_dir)
    patch = patch_size or spec.patch_size
    tokenizer = build_tiny_tokenizer(family, vocab_size=vocab_size)
    processor = _make_processor(
        family, tokenizer, patch_size=patch, merge_size=merge_size, image_size=image_size
    )
    config = _tiny_config(
        family,
        tokenizer,
        text_hidden=text_hidden,
        text_layers=text_layers,
        text_heads=text_heads,
        text_kv_heads=text_kv_heads,
        text_intermediate=text_intermediate,
        vision_depth=vision_depth,
        vision_width=vision_width,
        vision_heads=vision_heads,
        patch_size=patch,
        merge_size=merge_size,
        image_size=image_size,
    )
    with torch.random.fork_rng(devices=[]):  # seed the CPU generator without leaking it
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    gen = model.generation_config
    gen.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    gen.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    gen.bos_token_id = None
    return _saved(model, processor, save_dir)


def _saved(model: Any, processor: Any, save_dir: str | Path | None) -> tuple[Any, Any]:
    """``(model, processor)``, both first saved in ``save_dir`` when one is given."""
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(save_dir)
        processor.save_pretrained(save_dir)
    return model, processor
