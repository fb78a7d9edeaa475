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
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight."})
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
        default=16, metadata={"help": "Samples per teacher round and checkpoint."}
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


@dataclass
class ModelArguments:
    """Model and adapter arguments shared by ``sft`` and ``rl``."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local path or hub id of the VLM (Auto classes)."}
    )
    family: str | None = field(
        default=None, metadata={"help": "Backbone family (default: read from the model's config)."}
    )
    lora: bool = field(
        default=False, metadata={"help": "Train LoRA adapters (peft) instead of full weights."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "LoRA target modules (default: the adapter's choice for the language model)."
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
