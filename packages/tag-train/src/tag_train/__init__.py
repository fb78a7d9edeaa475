"""tag_train: TAG's training pipeline (traces, SFT, GRPO) behind the ``tag-train`` console script.

Subpackages and modules:

- :mod:`tag_train.teachers`: trace teachers (OpenAI-compatible client, local HF VLM, template).
- :mod:`tag_train.traces`: the resumable TAG-310K-style trace builder with rejection sampling.
- :mod:`tag_train.rewards`: TRL reward functions (format, answer, AU grounding).
- :mod:`tag_train.sft`, :mod:`tag_train.rl`: TRL ``SFTTrainer`` / ``GRPOTrainer`` runs.
- :mod:`tag_train.demo`: the built-in CPU demo (``tag-train rl`` with no arguments).
- :mod:`tag_train.student`: a distilled Flax NNX student (``tag-train distill``; emotion, AU
  probabilities and AU boxes in one forward pass; ``tag-eval run --model student:DIR``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
