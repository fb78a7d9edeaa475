"""Trainer callbacks: JSONL metrics and the reward's share of a GRPO step."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

__all__ = ["JsonlMetricsCallback", "RewardShareCallback"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        try:
            return _clean(v.item())
        except (ValueError, RuntimeError):
            return None
    return v


class JsonlMetricsCallback(TrainerCallback):
    """Appends every ``Trainer`` log (loss, rewards, KL, ...) as one JSON line.

    Lines look like ``{"step": 12, "epoch": 0.5, "time": 1719.3, "loss": 0.41, ...}``. The file
    is appended to, so a resumed run continues it (the steps say where it resumed).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        rec = {"step": state.global_step, "epoch": _clean(state.epoch), "time": time.time()}
        rec.update(
            {
                k: _clean(v)
                for k, v in logs.items()
                if isinstance(v, (int, float)) or hasattr(v, "item")
            }
        )
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")


class RewardShareCallback(TrainerCallback):
    """Measures each optimizer step's wall time and the part spent in the reward functions.

    Adds ``tag/reward_seconds`` (per step), ``tag/step_seconds`` and ``tag/reward_share`` to the
    logs; ``timer`` is the :class:`~tag_train.rewards.RewardTimer` that the rewards fill.
    """

    def __init__(self, timer: Any) -> None:
        self.timer = timer
        self._t0: float | None = None
        self.step_seconds: list[float] = []
        self.reward_seconds: list[float] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._t0 is None:
            return
        self.step_seconds.append(time.perf_counter() - self._t0)
        self.reward_seconds.append(self.timer.reset())
        self._t0 = None

    def summary(self) -> dict[str, float]:
        total = sum(self.step_seconds)
        reward = sum(self.reward_seconds)
        return {
            "tag/step_seconds": total / max(1, len(self.step_seconds)),
            "tag/reward_seconds": reward / max(1, len(self.reward_seconds)),
            "tag/reward_share": reward / total if total > 0 else 0.0,
        }

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if logs is not None and self.step_seconds and "loss" in logs:
            n = min(len(self.step_seconds), max(1, args.logging_steps))
            total = sum(self.step_seconds[-n:])
            reward = sum(self.reward_seconds[-n:])
            logs["tag/step_seconds"] = total / n
            logs["tag/reward_seconds"] = reward / n
            logs["tag/reward_share"] = reward / total if total > 0 else 0.0
