"""Script-argument dataclasses for ``tag-train traces|sft|rl`` (parsed by ``trl.TrlParser``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModelArguments", "RLScriptArguments", "SFTScriptArguments", "TracesArguments"]


@dataclass
class TracesArguments:
    """Arguments of ``tag-train traces`` (YAML keys have the same names)."""

    output_dir: str = field(metadata={"help": "Where the trace dataset is saved (save_to_disk)."})
    dataset: str = field(
        default="rafdb",
        metadata={"help": "Input reader: rafdb | ferplus | affectnet | folder | csv | synth."},
    )
    data_root: str | None = field(
        default=None, metadata={"help": "Dataset root (a folder, or the CSV for `csv`)."}
    )
    split: str = field(default="train", metadata={"help": "Split to read (train / test / ...)."})
    label_space: str | None = field(
        default=None,
        metadata={
            "help": "Label space name (rafdb, ferplus, affectnet7, affectnet8); default: the data's labels."
        },
    )
    family: str = field(
        default="qwen2_5_vl",
        metadata={"help": "Target backbone family: boxes are written in its coordinate space."},
    )
    teacher: str = field(default="template", metadata={"help": "Teacher: template | openai | hf."})
    teacher_model: str | None = field(
        default=None,
        metadata={"help": "openai: the served model name; hf: a local path or hub id."},
    )
    base_url: str = field(
        default="http://localhost:8000/v1",
        metadata={"help": "openai: the OpenAI-compatible base URL (e.g. `vllm serve`)."},
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "openai: NAME of the environment variable holding the API key (never logged)."
        },
    )
    concurrency: int = field(
        default=8,
        metadata={
            "help": "Teacher requests kept in flight at all times (streaming, no chunk barrier)."
        },
    )
    max_requests_per_minute: float | None = field(
        default=None, metadata={"help": "openai: cap on requests started per minute (rate limit)."}
    )
    extra_body: str | None = field(
        default=None,
        metadata={
            "help": "openai: JSON object merged into every request body (e.g. "
            '\'{"top_p": 0.9, "chat_template_kwargs": {"enable_thinking": false}}\').'
        },
    )
    max_consecutive_teacher_errors: int = field(
        default=20,
        metadata={
            "help": "Circuit breaker: stop (exit 5) after this many failed teacher requests in a "
            "row; rerun the same command to resume."
        },
    )
    prep_workers: int = field(
        default=2,
        metadata={"help": "Threads preparing faces (decode, quality, landmarks, detector)."},
    )
    detector: str = field(
        default="geometric",
        metadata={
            "help": "AU detector behind the activated lists (the same specs as `tag-eval run "
            "--detector`): geometric | openface:FILE.csv | openface:DIR (one CSV per image) | "
            "pyfeat | module.path:ClassName."
        },
    )
    shard: str | None = field(
        default=None,
        metadata={
            "help": "Build shard I of N ('I/N': rows i with i %% N == I); join the shards with "
            "`tag-train traces combine OUT SHARD_DIR...`."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "hf: weights dtype (auto = the checkpoint's; bfloat16 / float16 / float32).",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    timeout: float = field(default=120.0, metadata={"help": "openai: seconds per request."})
    max_http_retries: int = field(
        default=5, metadata={"help": "openai: retries on 429/5xx/timeouts (exponential backoff)."}
    )
    temperature: float = field(default=0.7, metadata={"help": "openai/hf: sampling temperature."})
    max_new_tokens: int = field(default=1024, metadata={"help": "openai/hf: max tokens per trace."})
    template_answer: str = field(
        default="label",
        metadata={
            "help": "template: answer the gold `label` or the best EMFACS `prototype` match."
        },
    )
    top_k: int = field(default=6, metadata={"help": "Activated list: at most K AUs."})
    prompt_style: str = field(
        default="full",
        metadata={
            "help": "Student prompt written to the dataset: 'full' (format and box convention "
            "spelled out) or 'compact' (one line; for small students, ~10x fewer tokens). "
            "Evaluate with the same style.",
            "choices": ["full", "compact"],
        },
    )
    threshold: float = field(
        default=0.5, metadata={"help": "Activated list: probability threshold."}
    )
    max_format_retries: int = field(
        default=2, metadata={"help": "Retries after a trace that does not parse."}
    )
    max_label_retries: int = field(
        default=2, metadata={"help": "Retries after a wrong answer (with label elimination)."}
    )
    chunk_size: int = field(
        default=16, metadata={"help": "hf: requests per batched generate call."}
    )
    min_sharpness: float = field(
        default=10.0, metadata={"help": "Quality: min variance of the Laplacian."}
    )
    min_face_px: int = field(default=48, metadata={"help": "Quality: min face size in pixels."})
    require_face: bool = field(
        default=True, metadata={"help": "Quality: drop images without a face."}
    )
    use_dlib: bool = field(default=True, metadata={"help": "Run dlib when a row has no landmarks."})
    limit: int | None = field(default=None, metadata={"help": "Build at most this many rows."})
    overwrite: bool = field(
        default=False, metadata={"help": "Discard an existing build's records."}
    )
    synth_n: int = field(default=64, metadata={"help": "synth: number of SynthFACS faces."})
    synth_size: int = field(default=112, metadata={"help": "synth: image side in pixels."})
    seed: int = field(default=0, metadata={"help": "Seed (template wording, synth faces)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    skip_missing: bool = field(
        default=False,
        metadata={
            "help": "Skip dataset rows whose image file is missing or corrupt (counted and "
            "reported) instead of failing."
        },
    )


@dataclass
class ModelArguments:
    """Model-loading arguments shared by ``sft`` and ``rl``, named as in TRL's ``ModelConfig``.

    ``--model_name_or_path`` is a full checkpoint (local folder or hub id) or a LoRA adapter
    folder (``adapter_config.json``; its base model is loaded and the adapter applied).
    ``--dtype``, ``--attn_implementation``, ``--use_peft`` / ``--lora_*`` and
    ``--load_in_4bit`` / ``--load_in_8bit`` mean what they mean in TRL; ``--min_pixels`` /
    ``--max_pixels`` set the image processor's pixel budget. Unlike TRL (``float32``), the
    default ``--dtype`` is ``auto``: the checkpoint's own dtype.
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Local folder or hub id of the VLM (Auto classes), or a LoRA adapter folder "
            "(adapter_config.json: its base model is loaded and the adapter applied)."
        },
    )
    model_revision: str | None = field(
        default=None,
        metadata={"help": "Hub revision (branch, tag or commit) of a hub id; ignored for folders."},
    )
    family: str | None = field(
        default=None, metadata={"help": "Backbone family (default: read from the model's config)."}
    )
    dtype: str | None = field(
        default="auto",
        metadata={
            "help": "Load the weights in this dtype; 'auto' (default) keeps the checkpoint's.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention implementation: eager, sdpa, flash_attention_2 (needs flash-attn "
            "and a GPU), ...; default: transformers' choice."
        },
    )
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters (peft) on the language model instead of full weights "
            "(the projector still trains fully). Implied when --model_name_or_path is an "
            "adapter folder: that adapter continues training."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "LoRA target modules inside the language model (default: q/k/v/o and "
            "gate/up/down projections)."
        },
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={
            "help": "Load the base model in 4 bit (bitsandbytes, CUDA only; QLoRA: needs --use_peft)."
        },
    )
    load_in_8bit: bool = field(
        default=False,
        metadata={
            "help": "Load the base model in 8 bit (bitsandbytes, CUDA only; needs --use_peft)."
        },
    )
    bnb_4bit_quant_type: str = field(
        default="nf4",
        metadata={"help": "4-bit quantization type.", "choices": ["fp4", "nf4"]},
    )
    use_bnb_nested_quant: bool = field(
        default=False, metadata={"help": "4 bit: nested (double) quantization."}
    )
    min_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Image processor: min pixels of the resized input (default: the processor's)."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Image processor: max pixels of the resized input (default: the processor's; "
            "e.g. 200704 = 256 * 28 * 28 caps visual tokens)."
        },
    )
    train_vision: bool = field(
        default=False, metadata={"help": "Also train the vision encoder (TAG freezes it)."}
    )
    train_merger: bool = field(
        default=True,
        metadata={
            "help": "Train the vision-language projector (merger) too, without LoRA "
            "(default: yes; --train_merger false keeps the encoder's features as they are)."
        },
    )

    def __post_init__(self) -> None:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("--load_in_4bit and --load_in_8bit exclude each other; choose one")


@dataclass
class SFTScriptArguments(ModelArguments):
    """Arguments of ``tag-train sft`` (plus every ``trl.SFTConfig`` field)."""

    dataset_path: str | None = field(
        default=None, metadata={"help": "A trace dataset from `tag-train traces` (load_from_disk)."}
    )
    label_space: str | None = field(
        default=None, metadata={"help": "Label space (default: the data's labels)."}
    )
    eval_fraction: float = field(
        default=0.0, metadata={"help": "Hold out this fraction for evaluation."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Resume from the last checkpoint in output_dir."}
    )
    metrics_file: str | None = field(
        default=None, metadata={"help": "JSONL metrics file (default: <output_dir>/metrics.jsonl)."}
    )


@dataclass
class RLScriptArguments(ModelArguments):
    """Arguments of ``tag-train rl`` (plus every ``trl.GRPOConfig`` field)."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "A trace dataset (needs image, label, activated). Empty: run the built-in demo."
        },
    )
    label_space: str | None = field(
        default=None, metadata={"help": "Label space (default: the data's labels)."}
    )
    grounding_beta: float = field(
        default=1.0,
        metadata={"help": "F-beta of the grounding reward (recall weight; not the KL beta)."},
    )
    class_aware: bool = field(
        default=True, metadata={"help": "Match boxes only within the same AU."}
    )
    empty_value: float = field(
        default=1.0,
        metadata={"help": "Grounding reward when both prediction and detector are empty."},
    )
    resume: bool = field(
        default=False, metadata={"help": "Resume from the last checkpoint in output_dir."}
    )
    metrics_file: str | None = field(
        default=None, metadata={"help": "JSONL metrics file (default: <output_dir>/metrics.jsonl)."}
    )
    preset: str | None = field(
        default=None, metadata={"help": "Run the built-in demo with this preset: smoke | default."}
    )
    reward_device: str = field(
        default="auto",
        metadata={
            "help": "Where the rewards parse and score: 'cpu' (the completions' text, Numba), "
            "'cuda' (TRL's completion_ids, Triton on the GPU; only B floats come back) or 'auto' "
            "(on CUDA, times both on a dummy batch before training and keeps the faster; "
            "else cpu).",
            "choices": ["auto", "cpu", "cuda"],
        },
    )
    box_credit: float = field(
        default=0.0,
        metadata={
            "help": "Per-box credit: the coordinate tokens of each box get that box's own IoU "
            "advantage (its IoU with the detector's box minus the mean of the group's boxes for "
            "the same region, batch-standardised, times this weight) instead of the sequence's "
            "advantage. 0 (default): TRL's GRPO unchanged. See tag_train._box_credit.",
        },
    )
    claim_credit: float = field(
        default=0.0,
        metadata={
            "help": "Per-claim credit: the tokens of an AU number named with a box get 1 if the "
            "detector sees that AU, else 0, minus the mean of the group's claims "
            "(batch-standardised, times this weight). 0 (default): off.",
        },
    )
