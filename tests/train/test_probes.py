"""Linear read-outs of tower features (`tag_train._probes`) on synthetic faces."""

from __future__ import annotations

import numpy as np
import pytest
from tag_kernels import IBUG68_REGIONS, landmarks_to_regions
from tag_model.synth import SynthFACS
from tag_train._probes import linear_probe_scores, ridge

SIZE = 112
AUS = (1, 4, 6, 12, 15, 25)


def _faces(n: int, seed: int):
    gen = SynthFACS(size=SIZE, seed=seed)
    lms = np.stack([np.asarray(gen.sample(i, render=False).landmarks) for i in range(n)])
    lms = lms.astype(np.float32)
    rng = np.random.default_rng(seed)
    chosen = rng.random((n, len(AUS))) < 0.4
    chosen[:, 0] |= ~chosen.any(1)  # every face has at least one detector entry
    labels = ["a" if c[3] else "b" for c in chosen]
    boxes = np.asarray(landmarks_to_regions(lms, np.full((n, 2), SIZE, np.float32)))
    activated = [
        [
            {"au": au, "box": boxes[i, IBUG68_REGIONS.region_of(au)].tolist()}
            for j, au in enumerate(AUS)
            if chosen[i, j]
        ]
        for i in range(n)
    ]
    return lms, chosen.astype(np.float32), labels, activated


def _scores(feat_fn):
    lms, hot, labels, act = _faces(400, 0)
    elms, ehot, elabels, eact = _faces(100, 1)
    return linear_probe_scores(
        feat_fn(lms, hot, 0),
        lms,
        act,
        labels,
        feat_fn(elms, ehot, 1),
        eact,
        elabels,
        (SIZE, SIZE),
    )


def test_informative_features_read_out_almost_perfectly() -> None:
    mix = np.random.default_rng(5).normal(size=(136 + len(AUS), 300))

    def feats(lms, hot, seed):  # a linear mix of the landmarks and the AU set, a little noise
        x = np.concatenate([lms.reshape(len(lms), -1) / SIZE, hot], 1) @ mix
        return x + 0.01 * np.random.default_rng(seed).normal(size=x.shape)

    s = _scores(feats)
    assert s["accuracy"] == pytest.approx(1.0)
    assert s["au_recall"] > 0.97
    assert s["box_iou"] > 0.9
    assert s["mean_iou"] > 0.88
    assert s["mean_iou"] <= min(s["box_iou"], s["au_recall"]) + 1e-9


def test_noise_features_fall_to_the_label_free_level() -> None:
    def noise(lms, hot, seed):
        return np.random.default_rng(seed + 10).normal(size=(len(lms), 300))

    s = _scores(noise)
    assert s["au_recall"] < 0.65  # chance for top-k of 6 AUs at 40 % each is ~0.5
    assert s["box_iou"] < 0.7  # about the mean face: SynthFACS varies pose and identity
    # the label-only references do not depend on the features
    assert 0.0 < s["class_mean_box_mean_iou"] <= s["class_top_au_recall"] <= 1.0


def test_ridge_recovers_a_linear_map_and_picks_a_penalty() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20))
    w = rng.normal(size=(20, 3))
    pred = ridge(x, x @ w + 5.0)(x[:10])
    np.testing.assert_allclose(pred, x[:10] @ w + 5.0, atol=0.05)
    wide = rng.normal(size=(30, 500))  # fewer rows than features: the dual form
    assert ridge(wide, wide[:, :2])(wide).shape == (30, 2)


def test_bad_shapes_name_the_arguments() -> None:
    lms, _hot, labels, act = _faces(10, 0)
    with pytest.raises(ValueError, match="train_landmarks"):
        linear_probe_scores(
            np.zeros((10, 4)),
            lms[:, :60],
            act,
            labels,
            np.zeros((2, 4)),
            act[:2],
            labels[:2],
            (SIZE, SIZE),
        )
