"""Sizes of ``tag-train pretrain`` (:class:`PretrainPreset`, :data:`PRETRAIN_PRESETS`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

__all__ = ["PRETRAIN_PRESETS", "PretrainPreset"]

from tag_model.au import RAFDB

_RAFDB = tuple(RAFDB.names)


@dataclass(frozen=True)
class PretrainPreset:
    """Everything that fixes a pretrained base: the same preset gives the same weights.

    Faces come from ``SynthFACS(seed=face_seed, variation=variation)``, a seed no demo or
    evaluation uses (those use the run seed, 0-2, and 10,000 + it), with wider pose and
    lighting than the demo's faces. Index ranges: the vision stage's faces first, then the
    grounding stage's, then the held-out faces of the final evaluation.
    """

    name: str
    labels: tuple[str, ...] = _RAFDB
    image_size: int = 112
    seed: int = 0  # weights, batch order and question draws
    face_seed: int = 7_000_001
    variation: float = 1.6
    vision_faces: int = 14000  # each also mirrored
    vision_steps: int = 12000
    vision_batch: int = 32
    vision_lr: float = 2e-3
    qa_faces: int = 8000
    qa_steps: int = 4000
    qa_batch: int = 8
    qa_lr: float = 1e-3
    #: the grounding stage also trains the vision tower (end to end), not only the language
    #: model and merger
    qa_train_vision: bool = False
    eval_faces: int = 200
    top_k: int = 3  # the trace builder's activated-list settings
    threshold: float = 0.5

    def to_dict(self) -> dict:
        """The fields as JSON has them (tuples become lists), as ``pretrain.json`` records."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRETRAIN_PRESETS: dict[str, PretrainPreset] = {
    "nano": PretrainPreset(name="nano"),
    "smoke": PretrainPreset(
        name="smoke",
        vision_faces=12,
        vision_steps=3,
        vision_batch=8,
        qa_faces=12,
        qa_steps=3,
        qa_batch=2,
        eval_faces=4,
    ),
}
