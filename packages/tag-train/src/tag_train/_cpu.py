"""CPU training jobs: the settings the demo's SFT and GRPO and the pretraining share."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["cpu_args", "cpu_job", "cpu_sft", "quiet_callbacks", "quiet_libraries"]


def cpu_args(cls: Any, **kw: Any) -> Any:
    """``cls(**kw)`` (an ``SFTConfig`` or ``GRPOConfig``) with the CPU job's defaults: fp32, no
    activation checkpointing, no reporters or dataloader workers, a log line every step."""
    base = dict(
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        dataloader_num_workers=0,
        save_only_model=False,
        logging_steps=1,
        seed=0,
        disable_tqdm=False,
    )
    base.update(kw)
    return cls(**base)


def quiet_callbacks(verbose: bool, desc: str, show: dict[str, str]) -> list[Any]:
    """One compact bar for the phase (per-step metrics go to the JSONL only), or none."""
    from tag_train._callbacks import CompactProgressCallback

    return [] if verbose else [CompactProgressCallback(desc, show)]


def cpu_job(verbose: bool, threads: int | None = None) -> None:
    """Set up a CPU training job (the demo, the pretraining, the arm scripts) before torch does
    any work.

    ``OMP_WAIT_POLICY=PASSIVE`` (unless set) when torch is not imported yet: on a small shared
    CPU, OpenMP's default spin-waiting makes each op wait out the other processes' time slices
    (a vision-tower step with 2 threads runs about 20x slower under load). Then library
    chatter is dropped (unless ``verbose``) and torch uses ``threads`` threads (default: at
    most 2)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if not verbose:
        quiet_libraries()
    torch.set_num_threads(threads or max(1, min(2, os.cpu_count() or 1)))


def quiet_libraries() -> None:
    """Drop library chatter a demo user can't act on (``--verbose`` keeps it)."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    hf_logging.set_verbosity_error()
    # The libraries' own bars: transformers' "Writing model shards" at every checkpoint save,
    # datasets' sub-second map and save bars. The phases' bars are TAG's (plain tqdm), so they
    # stay.
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def cpu_sft(
    model: Path,
    dataset: Path,
    out: Path,
    metrics: Path,
    *,
    steps: int,
    batch: int,
    lr: float,
    train_merger: bool,
    train_vision: bool = False,
    seed: int = 0,
    checkpoints: int = 4,
    desc: str = "SFT",
    verbose: bool = False,
    resume: bool = False,
) -> Any:
    """``tag-train sft`` on the CPU (the demo's SFT and the pretraining's grounding stage): a
    cosine schedule with 5 % warm-up, ``checkpoints`` saves (one kept), one progress bar.
    ``resume=True`` continues from the newest checkpoint in ``out`` when there is one."""
    from trl import SFTConfig

    from tag_train._args import SFTScriptArguments
    from tag_train.sft import run_sft

    args = SFTScriptArguments(
        model_name_or_path=str(model),
        family="qwen2_vl",
        dataset_path=str(dataset),
        metrics_file=str(metrics),
        train_merger=train_merger,
        train_vision=train_vision,
        resume=resume,
    )
    targs = cpu_args(
        SFTConfig,
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        save_strategy="steps",
        save_steps=max(10, steps // checkpoints),
        save_total_limit=1,
        max_length=None,
        seed=seed,
    )
    return run_sft(args, targs, callbacks=quiet_callbacks(verbose, desc, {"loss": "loss"}))
