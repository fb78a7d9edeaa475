"""Trainer callbacks: JSONL metrics, the reward's share of a GRPO step, a compact progress bar."""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from tag_model.jsonl import append_jsonl, read_jsonl
from transformers import TrainerCallback

__all__ = ["CompactProgressCallback", "JsonlMetricsCallback", "RewardShareCallback"]


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

    Lines look like ``{"step": 12, "epoch": 0.5, "time": 1719.3, "loss": 0.41, ...}``. When
    training begins (fresh or resumed from a checkpoint at step S), rows past S are dropped:
    a run killed after its last checkpoint logged steps that the resumed run trains again, and
    every step must appear once. A torn last line (killed mid-write) is dropped too.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero or not self.path.exists():
            return
        records, _ = read_jsonl(self.path, repair=True)
        keep = [r for r in records if int(r.get("step") or 0) <= state.global_step]
        self.dropped = len(records) - len(keep)
        if not self.dropped:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        append_jsonl(tmp, keep)
        tmp.touch()
        os.replace(tmp, self.path)
        print(
            f"{self.path}: dropped {self.dropped} rows logged after step {state.global_step} "
            "(training continues from there)"
        )

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
        append_jsonl(self.path, [rec])


class RewardShareCallback(TrainerCallback):
    """Measures each optimizer step's wall time and the part spent in the reward functions.

    Adds ``tag/reward_seconds`` (per step), ``tag/step_seconds`` and ``tag/reward_share`` to the
    logs; ``timer`` is the :class:`~tag_train.rewards.RewardTimer` that the rewards fill.
    :meth:`summary` reports the steady state: the median over the steps (the rewards' compiled
    kernels are warmed up before training, and the median ignores a slow first step anyway).
    """

    def __init__(self, timer: Any) -> None:
        self.timer = timer
        self._t0: float | None = None
        self.step_seconds: list[float] = []
        self.reward_seconds: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.timer.reset()  # time spent before the first step (warm-up) is not a step's

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
        """Median step time, median reward time and median per-step share over the steps."""
        if not self.step_seconds:
            return {"tag/step_seconds": 0.0, "tag/reward_seconds": 0.0, "tag/reward_share": 0.0}
        shares = [r / s if s > 0 else 0.0 for r, s in zip(self.reward_seconds, self.step_seconds)]
        return {
            "tag/step_seconds": statistics.median(self.step_seconds),
            "tag/reward_seconds": statistics.median(self.reward_seconds),
            "tag/reward_share": statistics.median(shares),
            "tag/steps": float(len(self.step_seconds)),
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


class CompactProgressCallback(TrainerCallback):
    """One progress bar for a training phase, with the few numbers that matter in its postfix.

    Replaces transformers' ``ProgressCallback``/``PrinterCallback``, which print every log as a
    dict (a line per logging step): :func:`tag_train._common.train_and_save` removes them when
    this callback is present. ``show`` maps a log key to its short name in the bar, e.g.
    ``{"loss": "loss"}`` or ``{"reward": "reward", "rewards/grounding_reward/mean":
    "grounding"}``; each shows the mean of the logs since the bar last refreshed. The full logs
    still reach every other callback (the JSONL metrics file).
    """

    def __init__(self, desc: str, show: dict[str, str]) -> None:
        self.desc = desc
        self.show = show
        self.bar: Any = None
        self._seen: dict[str, list[float]] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=state.max_steps, initial=state.global_step, desc=self.desc, dynamic_ncols=True
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if self.bar is None or not logs:
            return
        for key, name in self.show.items():
            v = _clean(logs.get(key))
            if isinstance(v, (int, float)):
                self._seen.setdefault(name, []).append(float(v))
        if self._seen:
            self.bar.set_postfix(
                {k: f"{statistics.fmean(v[-10:]):.3f}" for k, v in self._seen.items()},
                refresh=False,
            )

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
