"""``tag-train distill``'s command line (called by :mod:`tag_train.cli`)."""

from __future__ import annotations

from typing import Any

__all__ = ["DISTILL_HELP", "distill_main"]

DISTILL_HELP = (
    "Distil a TAG trace dataset into a small Flax NNX student that predicts the emotion, the "
    "AU probabilities and the AU region boxes (through 68 landmarks and "
    "tag_kernels.landmarks_to_regions, or directly) in one forward pass, and writes a TAG "
    "trace from them. optax training, orbax checkpoints every --save_steps (--resume "
    "continues from the last one), then a held-out evaluation (accuracy, grounding F, mean box "
    "IoU, AU precision/recall) in <output_dir>/eval.json. --preset smoke|demo builds a "
    "SynthFACS trace dataset first when --dataset_path is not given. Score it beside a VLM "
    "with `tag-eval run --model student:<output_dir> ...`."
)


def _given(argv: list[str]) -> set[str]:
    """Option names set on the command line or in the ``--config`` YAML file."""
    names = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    for i, a in enumerate(argv):
        path = None
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        if path:
            import yaml

            with open(path) as fh:
                names |= set((yaml.safe_load(fh) or {}).keys())
    return names


def distill_main(argv: list[str], **parser_kw: Any) -> int:
    """Parse ``argv`` (``TrlParser``: flags and ``--config file.yaml``) and run the distillation."""
    from trl import TrlParser

    from tag_train.student._train import DistillArguments, run_distill

    parser = TrlParser(
        (DistillArguments,), prog="tag-train distill", description=DISTILL_HELP, **parser_kw
    )
    (args,) = parser.parse_args_and_config(argv)
    run_distill(args, given=_given(argv))
    return 0
