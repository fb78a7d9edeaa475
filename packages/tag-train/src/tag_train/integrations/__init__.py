"""TAG's rewards inside other RL frameworks: verl, EasyR1 and OpenRLHF.

Each adapter module is a plain file the framework loads by path; none imports its framework:

- :mod:`tag_train.integrations.verl`: ``compute_score`` (per response) and
  ``compute_score_batch`` (verl's batch reward manager);
- :mod:`tag_train.integrations.easyr1`: ``compute_score(reward_inputs)`` (``REWARD_TYPE = "batch"``);
- :mod:`tag_train.integrations.openrlhf`: ``reward_func(queries, prompts, labels)``.

They all read one ``ground_truth`` object, :class:`GroundTruth` (a JSON string in exported
datasets, ``tag-train export``), and score with ``tag_train.rewards`` itself: one
``parse_batch`` and one ``au_grounding_reward`` call per batch. :func:`configure` sets the
weights of the total (default 1/1/1) and the grounding reward's options for every adapter.
See ``docs/integrations.md``.
"""

from tag_train.integrations._ground_truth import SCHEMA_VERSION, GroundTruth
from tag_train.integrations._score import (
    RewardSettings,
    Scores,
    configure,
    get_settings,
    score_batch,
)

__all__ = [
    "SCHEMA_VERSION",
    "GroundTruth",
    "RewardSettings",
    "Scores",
    "configure",
    "get_settings",
    "score_batch",
]
