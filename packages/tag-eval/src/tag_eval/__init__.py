"""tag_eval: accuracy, AU-grounding faithfulness, preference studies and reports for TAG.

Submodules (import what you need; heavy dependencies load lazily):

- :mod:`tag_eval.run` — ``tag-eval run``: :class:`~tag_eval.run.RunConfig`,
  :func:`~tag_eval.run.run_eval`, :func:`~tag_eval.run.load_eval_dataset`.
- :mod:`tag_eval.metrics` — accuracy, per-class, macro-F1, confusion matrix, bootstrap and
  Wilson intervals; :func:`~tag_eval.metrics.compute_metrics` scores a run directory.
- :mod:`tag_eval.faithfulness` — grounding F-score, AU precision/recall, hallucination rate,
  EMFACS consistency.
- :mod:`tag_eval.judge` — the LLM judge of ``tag-eval compare`` (pairwise, positions swapped).
- :mod:`tag_eval.human_study` — the human preference study: HTML page and answer sheet out,
  filled sheets scored back in.
- :mod:`tag_eval.report` — the self-contained HTML report (``tag-eval report``).
- :mod:`tag_eval.cli` — the ``tag-eval`` console script.
"""

from tag_eval._records import EvalDatasetError, EvalInputError, EvalModelError

__version__ = "0.1.0"

__all__ = ["EvalDatasetError", "EvalInputError", "EvalModelError", "__version__"]
