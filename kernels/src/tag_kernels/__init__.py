"""tag-kernels: the compiled core of TAG's AU-grounding reward.

Public names (stable; other RL code imports them):

- :func:`batched_box_iou` — ``[B,K,4] x [B,M,4] -> [B,K,M]`` IoU, ``xyxy``;
  :func:`elementwise_box_iou` — ``[...,4] x [...,4] -> [...]``, box by box, same rule.
- :func:`landmarks_to_regions`, :class:`Region`, :class:`RegionTable`, :data:`IBUG68_REGIONS` —
  AU region boxes from facial landmarks.
- :func:`activated_list` — the top-K detected AUs over a threshold, each with its region box
  (also importable from :mod:`tag_kernels.au_reward`, beside the reward that consumes it).
- :mod:`tag_kernels.au_reward` — :func:`~tag_kernels.au_reward.au_grounding_reward`.

Every op dispatches on its input: CUDA tensors run Triton, CPU tensors and NumPy arrays run
Numba, JAX arrays run JAX; ``backend="torch"`` runs the plain-torch reference (the specification).
"""

from .activated_list import activated_list
from .au_reward import AUGroundingResult, au_grounding_reward
from .box_iou import batched_box_iou, elementwise_box_iou
from .regions import IBUG68_REGIONS, Region, RegionTable, landmarks_to_regions

__version__ = "0.1.0"

__all__ = [
    "IBUG68_REGIONS",
    "AUGroundingResult",
    "Region",
    "RegionTable",
    "__version__",
    "activated_list",
    "au_grounding_reward",
    "batched_box_iou",
    "elementwise_box_iou",
    "landmarks_to_regions",
]
