"""The student as a ``tag-eval`` model: ``tag-eval run --model student:DIR``.

tag-eval never imports tag-train; it finds this class through the ``tag_eval.models`` entry
point (``student``) that tag-train's ``pyproject.toml`` declares.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["StudentGenerator"]


class StudentGenerator:
    """Duck-types ``tag_eval._generate.Generator``: ``generate(images, messages)`` returns one
    completion per image, the student's rendered trace (the prompt is not used)."""

    def __init__(self, folder: str | os.PathLike[str], **_: Any) -> None:
        from tag_model.backbones import get_adapter

        from tag_train.student._infer import load

        self.predictor = load(folder)
        self.family = self.predictor.config.family
        self.adapter = get_adapter(self.family)
        self.name = f"student:{folder}"

    def generate(
        self, images: Sequence[Any], messages: Callable[[Any], list[dict[str, Any]]]
    ) -> list[Any]:
        from tag_eval._generate import Generation

        t0 = time.perf_counter()
        out = self.predictor.predict(images)
        dt = time.perf_counter() - t0
        return [Generation(text, 0, 0, dt, len(images)) for text in out.traces or []]
