"""FER dataset readers into Hugging Face ``datasets``.

Every reader returns a ``datasets.Dataset`` with the columns

- ``image``: ``datasets.Image`` (decodes to a PIL image);
- ``label``: canonical emotion name (``happiness``, ...);
- ``label_id``: ``datasets.ClassLabel`` index into the reader's label space
  (:mod:`tag_model.au`: ``RAFDB``, ``FERPLUS``, ``AFFECTNET7``/``AFFECTNET8``, or all eight
  canonical classes for folders and CSVs);
- ``landmarks``: 68 ``[x, y]`` points in image pixels, or None when unknown;
- ``source``: the reader (``rafdb``, ``ferplus``, ``affectnet``, ``folder``, ``csv``);
- ``path``: the image path relative to the dataset root (FERPlus: its image name).

Nothing is lost silently: a malformed row raises :class:`DatasetFormatError` (a ``ValueError``
naming the file, the 1-based line and the value); rows removed by a documented rule are
counted in :class:`LoadReport` ``.dropped``; missing or corrupt images raise
:class:`DatasetImageError` listing them, or with ``skip_missing=True`` are skipped and listed
in the report (``return_report=True`` returns ``(dataset, report)``; the summary is also in
``dataset.info.description`` and logged). Every reader takes ``label_space=`` (a space name,
a ``LabelSpace`` or a list of labels): ``label_id`` indexes into it, and rows outside it are
dropped and counted (``dropped["not_in_label_space:<label>"]``). Image paths that leave the dataset root (``..``,
absolute, symlinks) raise :class:`UnsafePathError`.
"""

from ._affectnet import AFFECTNET_COLUMNS, load_affectnet
from ._common import (
    CANONICAL,
    DatasetFormatError,
    DatasetImageError,
    LabelSpaceArg,
    LoadReport,
    UnsafePathError,
    fer_features,
)
from ._dispatch import FER_SOURCES, load_fer_dataset
from ._ferplus import FERPLUS_VOTE_COLUMNS, ferplus_label, load_ferplus
from ._generic import IMAGE_EXTENSIONS, load_csv, load_folder
from ._landmarks import (
    RAFDB_LANDMARKS_FILE,
    SYNTHFACS_SIDECAR,
    RafdbLandmarks,
    read_rafdb_landmarks,
)
from ._rafdb import RAFDB_LABEL_FILE, load_rafdb

__all__ = [
    "AFFECTNET_COLUMNS",
    "CANONICAL",
    "FERPLUS_VOTE_COLUMNS",
    "FER_SOURCES",
    "IMAGE_EXTENSIONS",
    "RAFDB_LABEL_FILE",
    "RAFDB_LANDMARKS_FILE",
    "SYNTHFACS_SIDECAR",
    "DatasetFormatError",
    "DatasetImageError",
    "LabelSpaceArg",
    "LoadReport",
    "RafdbLandmarks",
    "UnsafePathError",
    "fer_features",
    "ferplus_label",
    "load_affectnet",
    "load_csv",
    "load_fer_dataset",
    "load_ferplus",
    "load_folder",
    "load_rafdb",
    "read_rafdb_landmarks",
]
