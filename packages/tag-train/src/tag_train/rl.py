"""``tag-train rl``: GRPO with TRL's ``GRPOTrainer`` and TAG's three rewards.

Rewards (``tag_train.rewards``): ``format_reward`` (the trace parses), ``answer_reward`` (the
answer equals the label) and ``grounding_reward`` (F-beta AU grounding against the
sample's activated list, scored by ``tag_kernels.au_reward``). Their weights are
``GRPOConfig.reward_weights`` (``--reward_weights 1 1 1``). TRL logs each component as
``rewards/<name>/mean``; the rewards add ``format/failure_rate``, ``answer/accuracy``,
``grounding/parse_failure_rate``, ``grounding/precision`` and ``grounding/recall``; the
run adds ``tag/reward_share`` (the rewards' share of a step's wall time).

``--reward_device`` picks where the rewards parse and score: ``cpu`` (the completions' text,
Numba), ``cuda`` (TRL's ``completion_ids``, Triton on the GPU) or ``auto`` (on CUDA, both paths
are timed on a dummy batch before training and the faster is kept; otherwise ``cpu``). The
chosen rewards run once on that batch before training, so the compile time of their kernels
is not counted in any step; the closing line reports the median step.

vLLM rollouts (``--use_vllm --vllm_mode colocate|server``) and multi-GPU launches
(``accelerate launch --config_file ...``, DeepSpeed ZeRO) are TRL / accelerate features and
pass straight through; see the package README and ``tag_train/configs``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tag_train._args import RLScriptArguments
from tag_train._callbacks import JsonlMetricsCallback, RewardShareCallback
from tag_train._common import (
    cpu_friendly,
    load_model_for_training,
    resumable,
    train_and_save,
)
from tag_train._settings_callback import (
    checkpoint_defaults,
    tag_settings_callback,
    training_labels,
)
from tag_train.rewards import RewardTimer, get_tag_rewards

__all__ = ["REWARD_NAMES", "run_rl", "to_rl_dataset"]

logger = logging.getLogger(__name__)

REWARD_NAMES = ("format_reward", "answer_reward", "grounding_reward")


def to_rl_dataset(traces: Any) -> Any:
    """Trace dataset -> GRPO dataset: ``prompt`` (chat messages), ``image``, ``label``, ``activated``."""
    need = ("image", "prompt", "label", "activated")
    missing = [c for c in need if c not in traces.column_names]
    if missing:
        raise ValueError(
            f"the RL dataset lacks columns {missing} (columns: {traces.column_names}); "
            "build it with `tag-train traces`"
        )
    return traces.select_columns(list(need))


def run_rl(
    script_args: RLScriptArguments,
    training_args: Any,
    *,
    callbacks: list[Any] | None = None,
    model: Any = None,
    processor: Any = None,
) -> Any:
    """Train with ``trl.GRPOTrainer``; returns the trainer (after ``train`` and ``save_model``).

    ``model``/``processor`` may be passed already loaded (the demo does); otherwise
    ``script_args.model_name_or_path`` is loaded with the adapter's freezing policy.
    """
    from datasets import load_from_disk
    from trl import GRPOTrainer

    if not script_args.dataset_path:
        raise ValueError("--dataset_path is required: a trace dataset from `tag-train traces`")
    cpu_friendly(training_args)
    traces = load_from_disk(script_args.dataset_path)
    dataset = to_rl_dataset(traces)
    checkpoint_defaults(script_args)  # unset --label_space/--family from the checkpoint's settings
    labels = training_labels(script_args, traces)
    if model is None:
        model, processor, adapter, report = load_model_for_training(script_args)
        print(f"tag-train rl: trainable parameters: {report}")
        family = adapter.family
    else:
        family = script_args.family or model.config.model_type
    timer = RewardTimer()

    def make_rewards(device: str, t: RewardTimer | None) -> list[Any]:
        return get_tag_rewards(
            family,
            labels=labels,
            beta=script_args.grounding_beta,
            class_aware=script_args.class_aware,
            empty_value=script_args.empty_value,
            processor=processor,
            timer=t,
            reward_device=device,
        )

    # one process's completions per generation (GRPOConfig's generation_batch_size is global)
    n = getattr(training_args, "generation_batch_size", None) or 0
    n = n // max(1, getattr(training_args, "world_size", 1))
    batch = dummy_reward_batch(processor, labels, n or training_args.per_device_train_batch_size)
    device, why = pick_reward_device(script_args.reward_device, make_rewards, batch)
    print(f"tag-train rl: rewards on {device} ({why})")
    rewards = make_rewards(device, timer)
    call_rewards(rewards, batch)  # compile the kernels now: the first step's share stays honest
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(
        rewards
    ):
        raise ValueError(
            f"--reward_weights needs {len(rewards)} values (format, answer, grounding), "
            f"got {training_args.reward_weights}"
        )
    share = RewardShareCallback(timer)
    metrics = script_args.metrics_file or str(Path(training_args.output_dir) / "metrics.jsonl")
    extra: dict[str, Any] = {}
    trainer_cls = GRPOTrainer
    if script_args.box_credit or script_args.claim_credit:
        from tag_model.backbones import get_adapter

        from tag_train._box_credit import BoxCreditGRPOTrainer

        trainer_cls = BoxCreditGRPOTrainer
        extra = {
            "adapter": get_adapter(family, processor=processor),
            "box_credit_weight": script_args.box_credit,
            "claim_credit_weight": script_args.claim_credit,
        }
    trainer = resumable(trainer_cls)(
        **extra,
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[
            share,
            JsonlMetricsCallback(metrics),
            tag_settings_callback(script_args, traces, family=family, labels=labels),
            *(callbacks or []),
        ],
    )
    train_and_save(trainer, script_args, training_args, processor, "rl")
    s = share.summary()
    print(
        f"tag-train rl: reward functions took {s['tag/reward_seconds'] * 1e3:.1f} ms of a "
        f"{s['tag/step_seconds']:.2f} s GRPO step ({100 * s['tag/reward_share']:.2f} %), "
        f"median of {int(s['tag/steps'])} steps"
    )
    trainer.tag_reward_share = s
    return trainer


def dummy_reward_batch(processor: Any, labels: Sequence[str], n: int) -> dict[str, Any]:
    """``n`` completions shaped like TRL's (chat messages plus ``completion_ids``), with their
    ``activated`` lists, ``image_size`` and ``label``: what the rewards get in one step."""
    from tag_model.grounding import TraceStep, render_trace

    steps = [
        TraceStep("the cheeks", "raised", (6,), (156, 208, 285, 314)),
        TraceStep("the lip corners", "pulled up and apart", (12, 25), (250, 600, 750, 850)),
        TraceStep("the brows", "slightly lowered", (4,), (153, 115, 242, 188)),
        TraceStep("the eyelids", "narrowed", (7,), (300, 280, 700, 360)),
    ]
    text = render_trace(
        "The face shows muscle activity around the eyes and the mouth.",
        steps,
        [6, 12],
        labels[0],
    )
    tok = getattr(processor, "tokenizer", processor)
    eos = getattr(tok, "eos_token_id", None)
    texts, ids = [], []
    for i in range(max(1, n)):
        t = text if i % 4 else text[: len(text) - 7 * (i % 9) - 1]  # some truncated, as in life
        texts.append(t)
        if tok is not None:
            row = list(tok(t, add_special_tokens=False)["input_ids"])
            ids.append(row + ([eos] if eos is not None and t is text else []))
    act = [
        {"au": 6, "prob": 0.9, "box": [18.0, 24.0, 32.0, 35.0]},
        {"au": 12, "prob": 0.8, "box": [28.0, 67.0, 84.0, 95.0]},
        {"au": 4, "prob": 0.6, "box": [17.0, 13.0, 27.0, 21.0]},
    ]
    k = len(texts)
    return {
        "completions": [[{"role": "assistant", "content": t}] for t in texts],
        "completion_ids": ids if tok is not None else None,
        "activated": [act] * k,
        "image_size": [(112, 112)] * k,
        "label": [labels[i % len(labels)] for i in range(k)],
    }


def call_rewards(rewards: Sequence[Callable[..., Any]], batch: dict[str, Any]) -> list[list[Any]]:
    """Call every reward on ``batch`` as TRL does (one new ``completions`` list per call)."""
    kw = dict(batch)
    kw["completions"] = list(batch["completions"])
    return [f(**kw) for f in rewards]


def pick_reward_device(
    requested: str | None,
    make_rewards: Callable[[str, Any], list[Any]],
    batch: dict[str, Any],
    repeats: int = 5,
) -> tuple[str, str]:
    """``(device, why)`` for ``get_tag_rewards(reward_device=device)``.

    ``"cpu"``/``"cuda"`` are kept as asked; ``"auto"`` is ``"cpu"`` without CUDA, and on CUDA
    the faster of the two paths on ``batch`` (median of ``repeats`` calls, after a warm-up),
    provided the token path gives the text path's rewards there (else ``"cpu"``, saying why).
    """
    requested = requested or "auto"
    if requested != "auto":
        return requested, "as asked"
    import numpy as np
    import torch

    if not torch.cuda.is_available() or batch.get("completion_ids") is None:
        return "cpu", "auto: no CUDA device, the completions' text with Numba"
    seconds, outputs = {}, {}
    for device in ("cpu", "cuda"):
        try:
            fns = make_rewards(device, None)
            outputs[device] = call_rewards(fns, batch)  # also compiles
            ts = []
            for _ in range(repeats):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                call_rewards(fns, batch)
                torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
            seconds[device] = statistics.median(ts)
        except Exception as exc:  # the GPU path must never cost a run that can go without it
            if device == "cpu":
                raise
            return "cpu", f"auto: the token path failed ({type(exc).__name__}: {exc})"
    for got, want in zip(outputs["cuda"], outputs["cpu"], strict=True):
        g, w = (np.array(x, dtype=float) for x in (got, want))
        if not np.allclose(g, w, atol=1e-5, equal_nan=True):
            return "cpu", "auto: the token path disagreed with the text path on a test batch"
    pick = "cuda" if seconds["cuda"] < seconds["cpu"] else "cpu"
    return pick, (
        f"auto: {len(batch['completions'])} completions scored in "
        f"{seconds['cuda'] * 1e3:.2f} ms from token ids on the GPU vs "
        f"{seconds['cpu'] * 1e3:.2f} ms from text on the CPU"
    )
