"""A distilled TAG student in Flax NNX: emotion, AU probabilities and AU region boxes in one
forward pass, and a TAG trace written from that evidence.

* ``tag-train distill`` (:func:`run_distill`, :class:`DistillArguments`) trains one on a trace
  dataset with optax and checkpoints it with orbax (resumable).
* :func:`load` ``(folder) -> StudentPredictor``; ``predictor.predict(images) -> StudentOutput``.
* ``tag-eval run --model student:DIR`` scores it like a VLM (:class:`StudentGenerator`).
"""

from tag_train.student._eval import StudentGenerator
from tag_train.student._infer import (
    FACE_CENTRE,
    FACE_FRACTION,
    StudentOutput,
    StudentPredictor,
    frame_face,
    load,
    render_student_trace,
)
from tag_train.student._model import StudentConfig, StudentNet, student_forward
from tag_train.student._train import (
    PRESETS,
    DistillArguments,
    evaluate_student,
    run_distill,
)

__all__ = [
    "FACE_CENTRE",
    "FACE_FRACTION",
    "PRESETS",
    "DistillArguments",
    "StudentConfig",
    "StudentGenerator",
    "StudentNet",
    "StudentOutput",
    "StudentPredictor",
    "evaluate_student",
    "frame_face",
    "load",
    "render_student_trace",
    "run_distill",
    "student_forward",
]
