"""``tag-train rl``: GRPO with TRL's ``GRPOTrainer`` and TAG's three rewards.

Rewards (``tag_train.rewards``): ``format_reward`` (the trace parses), ``answer_reward`` (the
answer equals the label) and ``grounding_reward`` (F-beta AU grounding against the
sample's activated list, scored by ``tag_kernels.au_reward``). Their weights are
``GRPOConfig.reward_weights`` (``--reward_weights 1 1 1``). TRL logs each component as
``rewards/<name>/mean``; the rewards add ``format/failure_rate``, ``answer/accuracy``,
``grounding/parse_failure_rate``, ``grounding/precision`` and ``grounding/recall``; the
run adds ``tag/reward_share`` (the rewards' share of a step's wall time).

vLLM rollouts (``--use_vllm --vllm_mode colocate|server``) and multi-GPU launches
(``accelerate launch --config_file ...``, DeepSpeed ZeRO) are TRL / accelerate features and
pass straight through; see the package README and ``tag_train/configs``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tag_train._args import RLScriptArguments
from tag_train._callbacks import JsonlMetricsCallback, RewardShareCallback
from tag_train._common import cpu_friendly, label_names, load_model_for_training, train_and_save
from tag_train._settings_callback import tag_settings_callback
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
    labels = label_names(traces, script_args.label_space)
    if model is None:
        model, processor, adapter, report = load_model_for_training(script_args)
        print(f"tag-train rl: trainable parameters: {report}")
        family = adapter.family
    else:
        family = script_args.family or model.config.model_type
    timer = RewardTimer()
    rewards = get_tag_rewards(
        family,
        labels=labels,
        beta=script_args.grounding_beta,
        class_aware=script_args.class_aware,
        empty_value=script_args.empty_value,
        processor=processor,
        timer=timer,
    )
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(
        rewards
    ):
        raise ValueError(
            f"--reward_weights needs {len(rewards)} values (format, answer, grounding), "
            f"got {training_args.reward_weights}"
        )
    share = RewardShareCallback(timer)
    metrics = script_args.metrics_file or str(Path(training_args.output_dir) / "metrics.jsonl")
    trainer = GRPOTrainer(
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
        f"{s['tag/step_seconds']:.2f} s GRPO step ({100 * s['tag/reward_share']:.2f} %)"
    )
    trainer.tag_reward_share = s
    return trainer
