"""SynthFACS: synthetic faces with known landmarks, Action Unit intensities and labels."""

from tag_model.synth._generator import PRESENCE_THRESHOLD, SynthFACS, SynthSample
from tag_model.synth._landmarks import attach_synth_landmarks
from tag_model.synth._rafdb import SynthAnnotation, read_synth_annotations, write_rafdb_layout
from tag_model.synth._shape import AU_FIELDS, MIRROR, NEUTRAL_SHAPE, SYNTH_AUS, expression_shape

#: iBUG-68 left/right correspondence: ``landmarks[IBUG68_MIRROR]`` re-indexes a mirrored face.
IBUG68_MIRROR = MIRROR

__all__ = [
    "AU_FIELDS",
    "IBUG68_MIRROR",
    "NEUTRAL_SHAPE",
    "PRESENCE_THRESHOLD",
    "SYNTH_AUS",
    "SynthAnnotation",
    "SynthFACS",
    "SynthSample",
    "attach_synth_landmarks",
    "expression_shape",
    "read_synth_annotations",
    "write_rafdb_layout",
]
