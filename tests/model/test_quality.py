"""Quality filter: sharpness, face size, face found; every rejection counted with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from tag_model.quality import REASONS, QualityFilter, laplacian_variance
from tag_model.synth import SynthFACS


@pytest.fixture(scope="module")
def sample():
    return SynthFACS(size=112, seed=0).sample(1)


def test_laplacian_variance_known_values() -> None:
    flat = np.full((20, 20), 128, np.uint8)
    assert laplacian_variance(flat) == 0.0
    checker = (np.indices((20, 20)).sum(0) % 2 * 255).astype(np.uint8)
    # every interior Laplacian is ±4*255, so the variance is (4*255)^2
    assert laplacian_variance(checker) == pytest.approx((4 * 255) ** 2)
    assert laplacian_variance(np.zeros((2, 2))) == 0.0
    assert laplacian_variance(checker, box=(0, 0, 2, 2)) == 0.0


def test_sharp_face_accepted_blurred_rejected(sample) -> None:
    q = QualityFilter()
    v = q.check(sample.image, sample.landmarks, key="sharp")
    assert v.ok and v.reason is None and v.sharpness > 100 and v.face_px > 40
    blurred = sample.image.filter(ImageFilter.GaussianBlur(2.5))
    v = q.check(blurred, sample.landmarks, key="blur")
    assert not v.ok and v.reason == "blurry" and "variance of Laplacian" in v.detail
    assert v.sharpness < q.min_sharpness
    assert q.summary()["accepted"] == 1 and q.summary()["blurry"] == 1


def test_every_reason_counted_never_silent(sample) -> None:
    q = QualityFilter(min_face_px=40)
    small = sample.landmarks * 0.3
    verdicts = [
        q.check(sample.image, None, key="a"),
        q.check(sample.image, small, key="b"),
        q.check(np.zeros((4,)), sample.landmarks, key="c"),
        q.check(sample.image, sample.landmarks, key="d"),
        q.check(sample.image, np.full((68, 2), np.nan), key="e"),
        q.check(sample.image, None, face_box=(10, 10, 100, 100), key="f"),
    ]
    reasons = [v.reason for v in verdicts]
    assert reasons == ["no_face", "face_too_small", "unreadable_image", None, "no_face", None]
    s = q.summary()
    assert s["checked"] == 6 and s["accepted"] == 2
    assert sum(s[r] for r in REASONS) + s["accepted"] == s["checked"]
    assert [k for k, *_ in q.rejected] == ["a", "b", "c", "e"]
    assert all(reason in REASONS and detail for _, reason, detail in q.rejected)
    q.reset()
    assert q.summary()["checked"] == 0 and q.rejected == []


def test_require_face_false_judges_whole_image(sample) -> None:
    q = QualityFilter(require_face=False)
    assert q.check(sample.image).ok
    assert q.check(Image.new("RGB", (64, 64), (90, 90, 90))).reason == "blurry"


def test_bad_thresholds() -> None:
    with pytest.raises(ValueError):
        QualityFilter(min_sharpness=-1)
