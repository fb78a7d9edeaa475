"""``tag-train pretrain``: a seeded, two-stage pretraining of a nano TAG base model.

The shipped ``tag-nano`` (``tag_model.backbones.load_backbone("tag-nano")``) is
``tag-train pretrain --preset nano``: a tiny Qwen2-VL whose vision tower first learns faces
alone (:mod:`._vision`), then whose language model learns to name active AUs and write region
boxes as text (:mod:`._qa`), on SynthFACS seeds no demo or evaluation uses.
"""

from tag_train.pretrain._presets import PRETRAIN_PRESETS, PretrainPreset
from tag_train.pretrain._qa import parse_qa, qa_rows, qa_scores
from tag_train.pretrain._run import main, qa_generate, run_pretrain
from tag_train.pretrain._vision import VisionWarmup, mirrored, vision_warmup

__all__ = [
    "PRETRAIN_PRESETS",
    "PretrainPreset",
    "VisionWarmup",
    "main",
    "mirrored",
    "parse_qa",
    "qa_generate",
    "qa_rows",
    "qa_scores",
    "run_pretrain",
    "vision_warmup",
]
