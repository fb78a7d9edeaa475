"""Tiny offline builds of the non-Qwen families: InternVL, LLaVA-OneVision, Gemma 3, SmolVLM.

Each family gets its real model class from a config (a few hundred thousand to ~2 M random
parameters), its real processor class with the PIL image processor, and a byte-level BPE
tokenizer trained offline (as for the Qwen families) that carries the family's own special
tokens as named attributes (``start_image_token``, ``boi_token``, ...), which the processors
read, and a chat template laid out like the released one (the role markers, the image
placeholder and the end-of-turn token of the family). The geometry is scaled down, but the
image pipeline keeps its structure: InternVL still tiles dynamically (56-px tiles, up to 4,
plus a thumbnail), LLaVA-OneVision still picks an anyres grid (28-px tiles, grid pinpoints up
to 2x2, plus the base image), SmolVLM still splits (56-px tiles plus a global image) and
Gemma 3 still pools one square image into a fixed number of soft tokens.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "FAMILY_SPECIAL_TOKENS",
    "GROUNDING_TAGS",
    "build_family_tokenizer",
    "chat_template_for",
    "ensure_smolvlm_processor",
    "keep_grounding_tags",
    "make_tiny",
]

# ------------------------------------------------------------------ special tokens
_SMOL_GRID = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))

#: The special tokens of each family's tiny tokenizer (the released tokenizers' names).
FAMILY_SPECIAL_TOKENS: dict[str, tuple[str, ...]] = {
    "internvl": (
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
        "<video>", "<think>", "</think>",
    ),
    "llava_onevision": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
    "gemma3": (
        "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
        "<start_of_image>", "<end_of_image>", "<image_soft_token>",
    ),
    "smolvlm": (
        "<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
        "<global-img>", "<image>", "<video>", *_SMOL_GRID,
    ),
}  # fmt: skip

#: InternVL's grounding tags. The released tokenizers list them among the added tokens marked
#: ``"special": true`` (from memory of InternVL2/3's tokenizer_config.json; not checkable
#: offline here), so ``decode(..., skip_special_tokens=True)`` (TRL's and tag-eval's decoding)
#: would drop them and leave a bare ``[[x1, y1, x2, y2]]``; :func:`keep_grounding_tags` makes
#: them ordinary whatever the checkpoint says.
GROUNDING_TAGS = ("<box>", "</box>", "<ref>", "</ref>", "<quad>", "</quad>")


def keep_grounding_tags(tokenizer: Any, tags: tuple[str, ...] = GROUNDING_TAGS) -> int:
    """Make ``tags`` ordinary (non-special) added tokens of ``tokenizer``, in place.

    Decoding with ``skip_special_tokens=True`` then keeps them, so a completion's
    ``<box>[[...]]</box>`` reaches the parsers as the model wrote it. Token ids and the
    tokenization of text are unchanged; the change is saved with the tokenizer.

    Returns:
        How many of ``tags`` were special before (0: nothing to do).
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return 0
    from tokenizers import Tokenizer

    data = json.loads(backend.to_str())
    changed = 0
    for tok in data.get("added_tokens", []):
        if tok.get("content") in tags and tok.get("special"):
            tok["special"] = False
            changed += 1
    if changed:
        tokenizer._tokenizer = Tokenizer.from_str(json.dumps(data))
        decoder = getattr(tokenizer, "_added_tokens_decoder", None)
        if isinstance(decoder, dict):
            for added in decoder.values():
                if getattr(added, "content", None) in tags:
                    added.special = False
    return changed


# ------------------------------------------------------------------ chat templates
# chatml as in OpenGVLab/InternVL3-*-hf: an image part is <IMG_CONTEXT> and a newline; the
# processor expands it into <img><IMG_CONTEXT>*n</img>.
_INTERNVL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<IMG_CONTEXT>\\n' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<video>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# chatml as in llava-hf/llava-onevision-qwen2-*-ov-hf: "<|im_start|>role " then the images,
# then each text part after a newline.
_LLAVA_OV_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + ' ' -}}"
    "{%- if message['content'] is string -%}{{- '\\n' + message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] | selectattr('type', 'equalto', 'image') -%}"
    "{{- '<image>' -}}{%- endfor -%}"
    "{%- for part in message['content'] | selectattr('type', 'equalto', 'video') -%}"
    "{{- '<video>' -}}{%- endfor -%}"
    "{%- for part in message['content'] | selectattr('type', 'equalto', 'text') -%}"
    "{{- '\\n' + part['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# As google/gemma-3-*-it: <bos>, turns <start_of_turn>user|model ... <end_of_turn>, the system
# message folded into the first user turn, an image part as <start_of_image> (the processor
# expands it into <start_of_image><image_soft_token>*n<end_of_image> between blank lines).
_GEMMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}"
    "{%- endif -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') -}}"
    "{%- if message['content'] is string -%}{{- message['content'] | trim -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<start_of_image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] | trim -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<end_of_turn>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)


def chat_template_for(family: str) -> str:
    """The tiny model's chat template of a non-Qwen ``family`` (canonical name)."""
    if family == "internvl":
        return _INTERNVL_TEMPLATE
    if family == "llava_onevision":
        return _LLAVA_OV_TEMPLATE
    if family == "gemma3":
        return _GEMMA3_TEMPLATE
    if family == "smolvlm":  # "<|im_start|>User:<image>text<end_of_utterance>\nAssistant:"
        from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

        return DEFAULT_CHAT_TEMPLATE
    raise ValueError(f"no tiny chat template for family {family!r}")


# ------------------------------------------------------------------ tokenizer
_TOKEN_ROLES: dict[str, dict[str, Any]] = {
    "internvl": dict(
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        named={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    ),
    "llava_onevision": dict(
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        named={"image_token": "<image>", "video_token": "<video>"},
    ),
    "gemma3": dict(
        eos_token="<end_of_turn>",
        pad_token="<pad>",
        bos_token="<bos>",
        named={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    ),
    "smolvlm": dict(
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        named={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
    ),
}


def build_family_tokenizer(family: str, *, vocab_size: int = 1024, seed: int = 0) -> Any:
    """A byte-level BPE tokenizer with ``family``'s special tokens and chat template."""
    from transformers import Qwen2Tokenizer

    from ._tiny import _tokenizer_json

    specials = FAMILY_SPECIAL_TOKENS[family]
    roles = _TOKEN_ROLES[family]
    # one BPE vocabulary without special tokens, trained once per process for all four
    # families; each family's special tokens are appended to it as added tokens
    model = json.loads(_tokenizer_json(vocab_size, seed, ()))["model"]
    named = dict(roles["named"])
    used = {roles["eos_token"], roles["pad_token"], roles.get("bos_token"), *named.values()}
    extra = [t for t in specials if t not in used]
    # the named ones first, in the family's order, so their ids do not depend on roles
    tokenizer_order = [t for t in specials if t in used]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(m) for m in model["merges"]],
        unk_token=None,
        eos_token=roles["eos_token"],
        pad_token=roles["pad_token"],
        bos_token=roles.get("bos_token"),
        extra_special_tokens=named,
        model_max_length=4096,
    )
    tokenizer.add_tokens(tokenizer_order, special_tokens=True)  # no-op for those present
    if extra:
        tokenizer.add_tokens(extra, special_tokens=True)
    if family == "internvl":  # special, as in the released tokenizer; then made ordinary
        from tokenizers import AddedToken

        tags = [AddedToken(t, special=True, normalized=False) for t in GROUNDING_TAGS]
        tokenizer.add_tokens(tags, special_tokens=True)
        keep_grounding_tags(tokenizer)
    tokenizer.chat_template = chat_template_for(family)
    return tokenizer


# ------------------------------------------------------------------ processors
def ensure_smolvlm_processor() -> None:
    """Let ``SmolVLMProcessor`` be built where the ``num2words`` package is absent.

    transformers' ``SmolVLMProcessor.__init__`` refuses to run without ``num2words``, which it
    uses only to spell out a video's frame count in the video prompt. TAG feeds images, so
    where ``num2words`` is missing this installs a stand-in in that module that raises the
    same ImportError when a video prompt is built; with ``num2words`` installed it does
    nothing.
    """
    try:
        import transformers.models.smolvlm.processing_smolvlm as mod
    except ImportError:  # pragma: no cover - transformers without SmolVLM
        return
    if getattr(mod, "num2words", None) is not None:
        return

    def num2words(*args: Any, **kwargs: Any) -> str:
        raise ImportError(
            "SmolVLM video prompts need the `num2words` package (pip install num2words); "
            "TAG's image inputs do not"
        )

    mod.num2words = num2words


def _processor(family: str, tokenizer: Any, tile: int, patch: int) -> tuple[Any, dict[str, int]]:
    """The family's processor (PIL image processor) and the token counts the config needs."""
    import transformers

    template = chat_template_for(family)
    spec_cls = getattr(transformers, _PROCESSOR_CLASS[family])
    per_side = tile // patch
    if family == "internvl":
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
            GotOcr2ImageProcessorPil,
        )

        image_processor = GotOcr2ImageProcessorPil(
            size={"height": tile, "width": tile},
            crop_to_patches=True,
            min_patches=1,
            max_patches=4,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
        seq = (per_side // 2) ** 2  # pixel shuffle with downsample_ratio 0.5
        video = _video_processor(family)
        proc = spec_cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video,
            image_seq_length=seq,
            chat_template=template,
        )
        return proc, {"image_seq_length": seq}
    if family == "llava_onevision":
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil,
        )

        pinpoints = [[tile * r, tile * c] for r in (1, 2) for c in (1, 2)]
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints
        )
        seq = per_side * per_side
        proc = spec_cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=_video_processor(family),
            num_image_tokens=seq,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
            chat_template=template,
        )
        return proc, {"image_seq_length": seq, "pinpoints": pinpoints}
    if family == "gemma3":
        from transformers.models.gemma3.image_processing_pil_gemma3 import (
            Gemma3ImageProcessorPil,
        )

        image_processor = Gemma3ImageProcessorPil(
            size={"height": tile, "width": tile},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            do_pan_and_scan=False,
        )
        seq = (per_side // 2) ** 2  # 2x2 average pooling of the patch grid
        proc = spec_cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_length=seq,
            chat_template=template,
        )
        return proc, {"image_seq_length": seq}
    if family == "smolvlm":
        ensure_smolvlm_processor()
        from transformers.models.smolvlm.image_processing_pil_smolvlm import (
            SmolVLMImageProcessorPil,
        )

        image_processor = SmolVLMImageProcessorPil(
            size={"longest_edge": 2 * tile},
            max_image_size={"longest_edge": tile},
            do_image_splitting=True,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        seq = (per_side // 2) ** 2  # pixel shuffle, scale_factor 2
        proc = spec_cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=_video_processor(family),
            image_seq_len=seq,
            chat_template=template,
        )
        return proc, {"image_seq_length": seq}
    raise ValueError(f"no tiny processor for family {family!r}")


_PROCESSOR_CLASS = {
    "internvl": "InternVLProcessor",
    "llava_onevision": "LlavaOnevisionProcessor",
    "gemma3": "Gemma3Processor",
    "smolvlm": "SmolVLMProcessor",
}


def _video_processor(family: str) -> Any:
    """The family's video processor (transformers' video processors need torchvision)."""
    import transformers

    from ._families import family_spec

    name = family_spec(family).video_processor_class
    try:
        return getattr(transformers, name)()
    except ImportError as exc:  # pragma: no cover - torchvision is a dependency here
        raise ImportError(
            f"the tiny {family} processor needs {name}, which needs torchvision: {exc}"
        ) from exc


# ------------------------------------------------------------------ configs
def _config(
    family: str,
    tokenizer: Any,
    counts: dict[str, Any],
    *,
    tile: int,
    patch: int,
    text: dict[str, Any],
    vision: dict[str, Any],
) -> Any:
    import transformers

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in FAMILY_SPECIAL_TOKENS[family]}
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    pad = tokenizer.convert_tokens_to_ids(tokenizer.pad_token)
    text = dict(
        text,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=(
            tokenizer.convert_tokens_to_ids(tokenizer.bos_token) if tokenizer.bos_token else None
        ),
    )
    vision = dict(vision, image_size=tile, patch_size=patch)
    if family == "internvl":
        text.update(model_type="qwen2")
        vision.update(
            model_type="internvl_vision",
            intermediate_size=2 * vision["hidden_size"],
            use_mean_pooling=False,
        )
        return transformers.InternVLConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=ids["<IMG_CONTEXT>"],
            image_seq_length=counts["image_seq_length"],
            downsample_ratio=0.5,
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
            tie_word_embeddings=True,
        )
    if family == "llava_onevision":
        text.update(model_type="qwen2")
        vision.update(
            model_type="siglip_vision_model",
            intermediate_size=2 * vision["hidden_size"],
            vision_use_head=False,
        )
        return transformers.LlavaOnevisionConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=ids["<image>"],
            video_token_index=ids["<video>"],
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=counts["pinpoints"],
            vision_aspect_ratio="anyres_max_9",
            tie_word_embeddings=True,
        )
    if family == "gemma3":
        n_layers = text["num_hidden_layers"]
        text.update(
            model_type="gemma3_text",
            head_dim=text["hidden_size"] // text["num_attention_heads"],
            query_pre_attn_scalar=text["hidden_size"] // text["num_attention_heads"],
            sliding_window=64,
            layer_types=["sliding_attention"] * (n_layers - 1) + ["full_attention"],
        )
        vision.update(
            model_type="siglip_vision_model",
            intermediate_size=2 * vision["hidden_size"],
            vision_use_head=False,
        )
        return transformers.Gemma3Config(
            vision_config=vision,
            text_config=text,
            mm_tokens_per_image=counts["image_seq_length"],
            boi_token_index=ids["<start_of_image>"],
            eoi_token_index=ids["<end_of_image>"],
            image_token_index=ids["<image_soft_token>"],
            tie_word_embeddings=True,
        )
    if family == "smolvlm":
        text.update(model_type="llama")
        vision.update(intermediate_size=2 * vision["hidden_size"])
        return transformers.SmolVLMConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=ids["<image>"],
            scale_factor=2,
            tie_word_embeddings=True,
        )
    raise ValueError(f"no tiny config for family {family!r}")


def make_tiny(
    family: str,
    *,
    seed: int,
    image_size: int,
    text_hidden: int,
    text_layers: int,
    text_heads: int,
    text_kv_heads: int,
    text_intermediate: int,
    vision_depth: int,
    vision_width: int,
    vision_heads: int,
    patch_size: int | None,
    vocab_size: int,
    dtype: Any,
) -> tuple[Any, Any]:
    """``(model, processor)`` of a tiny random non-Qwen ``family`` (see ``make_tiny_vlm``).

    ``image_size`` sets the tile side: ``image_size // 2`` (56 px for the default 112), so
    that a 112-px face already gives InternVL a 2x2 tiling, LLaVA-OneVision its 2x2 anyres
    grid and SmolVLM a 2x2 split; Gemma 3 resizes it to one 56-px square.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    patch = patch_size or 14
    tile = max(4 * patch, (image_size // 2) // (2 * patch) * (2 * patch))
    tokenizer = build_family_tokenizer(family, vocab_size=vocab_size)
    processor, counts = _processor(family, tokenizer, tile, patch)
    config = _config(
        family,
        tokenizer,
        counts,
        tile=tile,
        patch=patch,
        text=dict(
            hidden_size=text_hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            num_key_value_heads=text_kv_heads,
            intermediate_size=text_intermediate,
        ),
        vision=dict(
            hidden_size=vision_width,
            num_hidden_layers=vision_depth,
            num_attention_heads=vision_heads,
        ),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    gen = model.generation_config
    gen.eos_token_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    gen.pad_token_id = tokenizer.convert_tokens_to_ids(tokenizer.pad_token)
    gen.bos_token_id = (
        tokenizer.convert_tokens_to_ids(tokenizer.bos_token) if tokenizer.bos_token else None
    )
    return model, processor
