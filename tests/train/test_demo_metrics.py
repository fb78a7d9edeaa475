"""The demo's box-agreement statistics and goal check, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
from tag_train.demo import _iou_stats, demo_goals, mean_box_baseline


def _act(*entries: tuple[int, list[float]]) -> list[dict]:
    return [{"au": au, "prob": 0.9, "box": box} for au, box in entries]


def test_iou_stats_counts_missing_aus_as_zero() -> None:
    activated = [
        _act((12, [0, 0, 10, 10]), (6, [0, 0, 10, 10])),
        _act((4, [0, 0, 10, 10])),
        [],  # no detector entries: not counted
    ]
    pred_au = np.array([[12, -1], [4, 4], [1, -1]])
    pred_px = np.array(
        [
            [[0, 0, 10, 10], [0, 0, 0, 0]],  # AU12 exact, AU6 missing
            [[0, 0, 10, 5], [0, 0, 10, 10]],  # AU4 twice: the best box counts
            [[0, 0, 1, 1], [0, 0, 0, 0]],
        ],
        dtype=np.float32,
    )
    s = _iou_stats(pred_au, pred_px, activated)
    assert s["au_recall"] == pytest.approx(2 / 3)
    assert s["iou_found"] == pytest.approx(1.0)
    assert s["mean_iou"] == pytest.approx(2 / 3)


def test_mean_box_baseline() -> None:
    train = {"activated": [_act((12, [0, 0, 10, 10])), _act((12, [10, 10, 20, 20]))]}
    test = {"activated": [_act((12, [5, 5, 15, 15]), (99, [0, 0, 1, 1]))]}  # AU99 never seen
    assert mean_box_baseline(train, test) == pytest.approx(1.0)
    test2 = {"activated": [_act((12, [5, 5, 10, 15]))]}
    assert mean_box_baseline(train, test2) == pytest.approx(0.5)


def test_goals_need_a_ci_above_zero() -> None:
    ev = {"format": 1.0, "accuracy": 0.8, "mean_iou": 0.75}
    up = {"mean": 0.1, "low": 0.02, "high": 0.2}
    flat = {"mean": 0.1, "low": -0.02, "high": 0.2}
    summary = {
        "eval_after_sft": ev,
        "eval_after_rl": {**ev, "accuracy": 0.76},
        "rl_rewards": {"change": {"total": up, "grounding": flat}},
        "rl_vs_sft": {"mean_iou": flat, "grounding": up},
        "seconds": {"total": 901.0},
    }
    met = {k: g["met"] for k, g in demo_goals(summary).items()}
    # wall time missed; SFT goals met; total rises; grounding's CI straddles 0; greedy:
    # grounding F rises but accuracy fell by 0.04
    assert list(met.values()) == [False, True, True, False, False]
    summary["eval_after_rl"]["accuracy"] = 0.78
    assert demo_goals(summary)[list(met)[-1]]["met"] is True
    summary["rl_vs_sft"]["grounding"] = flat
    assert demo_goals(summary)[list(met)[-1]]["met"] is False


def test_rl_fifths_give_the_change_with_a_ci(tmp_path) -> None:
    import json
    import math

    from tag_train.demo._summary import rl_fifths

    rows = [
        {
            "phase": "rl",
            "reward": 1.0 + 0.01 * i + 0.01 * (i % 3),
            "rewards/format_reward/mean": 1.0,
            "rewards/answer_reward/mean": 0.5,
            "rewards/grounding_reward/mean": 0.3 + 0.002 * (i % 7),
        }
        for i in range(50)
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    f = rl_fifths(path)
    assert f["change"]["total"]["low"] > 0.3  # a steady climb of 0.4 over the run
    g = f["change"]["grounding"]
    assert g["low"] < 0 < g["high"] or abs(g["mean"]) < 0.01  # periodic noise, no trend
    assert f["change"]["format"]["mean"] == 0.0
    # a GRPO run's own log (no "phase" key), read with phase=None, gives the same fifths
    raw = tmp_path / "raw.jsonl"
    raw.write_text(
        "\n".join(json.dumps({k: v for k, v in r.items() if k != "phase"}) for r in rows)
    )
    assert rl_fifths(raw, phase=None) == f
    # the default keeps only the demo's "rl" lines: none here
    assert math.isnan(rl_fifths(raw)["first_fifth"]["total"])


def test_rl_arm_passes_the_presets_grpo_settings(monkeypatch, tmp_path) -> None:
    """The preset's GRPO fields reach TRL's GRPOConfig (aggregation, weights, sampling), and
    they stay out of the cache key: changing them reuses the cached SFT."""
    import dataclasses

    import tag_train.rl
    from tag_train.demo._presets import PRESETS
    from tag_train.demo._run import _rl_arm

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_rl(rargs, targs, callbacks=None):
        seen["targs"] = targs
        raise Stop

    monkeypatch.setattr(tag_train.rl, "run_rl", fake_run_rl)
    base = PRESETS["smoke"]
    p = dataclasses.replace(
        base, rl_aggregation="normalize_then_sum", rl_temperature=0.9, rl_grounding_weight=3.0
    )
    assert p.key() == base.key()
    with pytest.raises(Stop):
        _rl_arm(p, tmp_path, tmp_path / "run", (1.0, 1.0, 3.0), None, None, {}, False, False)
    t = seen["targs"]
    assert t.multi_objective_aggregation == "normalize_then_sum"
    assert t.temperature == 0.9 and list(t.reward_weights) == [1.0, 1.0, 3.0]
    assert t.num_generations == base.rl_generations


def test_rl_arm_trains_on_the_cached_traces_unless_given_others(monkeypatch, tmp_path) -> None:
    """GRPO's prompts are the cache's SFT traces by default; ``traces=`` (what
    ``scripts/demo_grpo_arms.py --fresh N`` passes) swaps in another dataset, same SFT."""
    import tag_train.rl
    from tag_train.demo._presets import PRESETS
    from tag_train.demo._run import _rl_arm

    seen = []

    class Stop(Exception):
        pass

    def fake_run_rl(rargs, targs, callbacks=None):
        seen.append(rargs)
        raise Stop

    monkeypatch.setattr(tag_train.rl, "run_rl", fake_run_rl)
    p = PRESETS["smoke"]
    for traces in (None, tmp_path / "fresh" / "traces"):
        with pytest.raises(Stop):
            _rl_arm(
                p,
                tmp_path,
                tmp_path / "run",
                (1, 1, 2),
                None,
                None,
                {},
                False,
                False,
                traces=traces,
            )
    assert seen[0].dataset_path == str(tmp_path / "traces")
    assert seen[1].dataset_path == str(tmp_path / "fresh" / "traces")
    assert seen[0].model_name_or_path == seen[1].model_name_or_path == str(tmp_path / "sft")


def test_fields_added_later_keep_older_caches_and_split_when_set():
    """``teacher_rationalize`` and ``sft_train_vision`` at their defaults leave the cache key
    as it was before they existed (so cached SFTs stay valid); set, they name a cache of
    their own."""
    import dataclasses
    import hashlib
    import json

    from tag_train.demo._base import base_fingerprint
    from tag_train.demo._presets import _CACHE_VERSION, GRPO_FIELDS, PRESETS

    base = PRESETS["default"]
    # the key's recipe as it was before the two fields were added
    d = dataclasses.asdict(base)
    for k in ("teacher_rationalize", "sft_train_vision", *GRPO_FIELDS, "ablation", "n_pictures"):
        d.pop(k)
    d["base"] = base_fingerprint(base.base)
    d["name"] = d.pop("cache_as") or d["name"]
    old = hashlib.sha1(json.dumps([_CACHE_VERSION, d], sort_keys=True).encode()).hexdigest()
    assert base.key() == f"default-{old[:10]}"
    assert PRESETS["ablation"].key() == base.key()
    for field, value in (("teacher_rationalize", 0.5), ("sft_train_vision", True)):
        assert dataclasses.replace(base, **{field: value}).key() != base.key()
