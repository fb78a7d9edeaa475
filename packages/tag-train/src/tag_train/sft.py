"""``tag-train sft``: supervised fine-tuning on TAG traces with TRL's ``SFTTrainer``.

The trace dataset (from ``tag-train traces``) becomes a TRL prompt-completion vision dataset:
``prompt`` (the student's chat messages; TRL inserts the image), ``completion`` (the trace
as the assistant turn) and ``image``. The loss is on the completion only. The backbone
adapter's freezing policy applies (vision encoder frozen; ``--lora`` for LoRA).
Checkpoints land in ``output_dir/checkpoint-*``; ``--resume`` continues from the newest, with
its weights, optimizer, scheduler, RNG and data position (``tag_train._common.resumable``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tag_train._args import SFTScriptArguments
from tag_train._callbacks import JsonlMetricsCallback
from tag_train._common import cpu_friendly, load_model_for_training, resumable, train_and_save
from tag_train._settings_callback import tag_settings_callback

__all__ = ["run_sft", "to_sft_dataset"]

logger = logging.getLogger(__name__)


def to_sft_dataset(traces: Any) -> Any:
    """Trace dataset -> TRL vision prompt-completion dataset (``prompt, completion, image``)."""
    for col in ("image", "prompt", "trace"):
        if col not in traces.column_names:
            raise ValueError(
                f"the trace dataset has no {col!r} column (columns: {traces.column_names}); "
                "build it with `tag-train traces`"
            )
    ds = traces.map(
        lambda ex: {"completion": [{"role": "assistant", "content": ex["trace"]}]},
        desc="sft format",
    )
    return ds.select_columns(["prompt", "completion", "image"])


def run_sft(
    script_args: SFTScriptArguments, training_args: Any, *, callbacks: list[Any] | None = None
) -> Any:
    """Train with ``trl.SFTTrainer``; returns the trainer (after ``train`` and ``save_model``)."""
    from datasets import load_from_disk
    from trl import SFTTrainer

    if not script_args.dataset_path:
        raise ValueError("--dataset_path is required: a trace dataset from `tag-train traces`")
    cpu_friendly(training_args)
    traces = load_from_disk(script_args.dataset_path)
    dataset = to_sft_dataset(traces)
    eval_dataset = None
    if script_args.eval_fraction > 0:
        split = dataset.train_test_split(
            test_size=script_args.eval_fraction, seed=training_args.seed
        )
        dataset, eval_dataset = split["train"], split["test"]
    model, processor, _adapter, report = load_model_for_training(script_args)
    print(f"tag-train sft: trainable parameters: {report}")
    metrics = script_args.metrics_file or str(Path(training_args.output_dir) / "metrics.jsonl")
    trainer = resumable(SFTTrainer)(
        model=model,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        callbacks=[
            JsonlMetricsCallback(metrics),
            tag_settings_callback(script_args, traces, family=_adapter.family),
            *(callbacks or []),
        ],
    )
    train_and_save(trainer, script_args, training_args, processor, "sft")
    return trainer
