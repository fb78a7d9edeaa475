"""``tag_settings.json`` in every checkpoint: what a trained TAG model's prompt and boxes mean.

:func:`tag_settings_callback` builds the run's :class:`~tag_model.backbones.TagSettings` from
the model's family, the trace dataset (its ``tag_settings.json``, written by ``tag-train
traces``, else its build manifest, else its prompts) and the command line, and returns a
``TrainerCallback`` that writes them into every ``checkpoint-*`` folder as it is saved and
into ``output_dir`` when training ends (next to the final weights ``save_model`` writes).

:func:`checkpoint_defaults` reads the *input* checkpoint's settings, so ``tag-train rl`` on an
SFT checkpoint keeps the SFT run's label set without repeating ``--label_space``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

__all__ = [
    "TagSettingsCallback",
    "checkpoint_defaults",
    "run_settings",
    "tag_settings_callback",
    "trace_settings",
    "training_labels",
]

logger = logging.getLogger(__name__)


def _detect_style(traces: Any, family: str, labels: tuple[str, ...]) -> str | None:
    """The prompt style whose prompt equals the dataset's first ``prompt`` (None: neither)."""
    if traces is None or len(traces) == 0 or "prompt" not in traces.column_names:
        return None
    from tag_model.backbones import PROMPT_STYLES, get_adapter

    from tag_train.traces import student_prompt

    row = traces[0]
    size = tuple(row["image"].size) if "image" in row and row["image"] is not None else (112, 112)
    for style in PROMPT_STYLES:
        if student_prompt(get_adapter(family), labels, size, style) == row["prompt"]:
            return style
    return None


def trace_settings(dataset_path: str | os.PathLike[str] | None, traces: Any = None) -> Any:
    """The :class:`~tag_model.backbones.TagSettings` a trace dataset was built with, or None.

    Read from ``<dataset_path>/tag_settings.json`` (``tag-train traces`` writes it), else
    from the build manifest ``_build/manifest.json`` (older builds: family, labels and prompt
    style; no detector), else None.
    """
    from tag_model.backbones import TagSettings, load_tag_settings

    if not dataset_path:
        return None
    found = load_tag_settings(dataset_path)
    if found is not None:
        return found
    manifest = Path(dataset_path) / "_build" / "manifest.json"
    try:
        cfg = json.loads(manifest.read_text(encoding="utf-8"))["config"]
        return TagSettings.for_family(
            cfg["family"],
            cfg["labels"],
            label_space=cfg.get("label_space"),
            prompt_style=cfg.get("prompt_style", "full"),
            detector=None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_defaults(script_args: Any) -> Any:
    """Fill unset ``--label_space`` / ``--family`` from the input checkpoint's settings.

    Reads ``<model_name_or_path>/tag_settings.json`` (a full checkpoint or an adapter folder
    written by ``tag-train sft|rl|merge``); values given on the command line win. Returns the
    checkpoint's settings (None when it has none). Call it before the label set is chosen
    (``tag-train rl``: before ``label_names``).
    """
    from tag_model.backbones import load_tag_settings

    path = getattr(script_args, "model_name_or_path", None)
    if not path or not os.path.isdir(os.path.expanduser(path)):
        return None
    found = load_tag_settings(os.path.expanduser(path))
    if found is None:
        return None
    if getattr(script_args, "label_space", None) is None and found.label_space:
        script_args.label_space = found.label_space
        logger.info("label space %s from %s", found.label_space, path)
    if getattr(script_args, "family", None) is None:
        script_args.family = found.family
    return found


def training_labels(script_args: Any, traces: Any) -> tuple[str, ...]:
    """The label set a run should train with when it has to choose one (``tag-train rl``'s
    rewards): ``--label_space``, else the input checkpoint's ``tag_settings.json``, else the
    trace dataset's settings (the labels its prompts list), else the sorted labels present.
    """
    from tag_model.au import get_label_space
    from tag_model.backbones import load_tag_settings

    space = getattr(script_args, "label_space", None)
    if space:
        return tuple(get_label_space(space).names)
    path = getattr(script_args, "model_name_or_path", None)
    if path and os.path.isdir(os.path.expanduser(path)):
        found = load_tag_settings(os.path.expanduser(path))
        if found is not None:
            return tuple(found.labels)
    data = trace_settings(getattr(script_args, "dataset_path", None), traces)
    if data is not None:
        return tuple(data.labels)
    return tuple(sorted(set(traces["label"])))


def run_settings(
    script_args: Any,
    traces: Any = None,
    *,
    family: str,
    labels: Any = None,
) -> Any:
    """The settings of a ``tag-train sft|rl`` run.

    ``family`` is the trained model's. The label set is the one the training prompts list:
    the trace dataset's (its ``tag_settings.json`` or build manifest), else ``labels`` (the
    set the run's rewards parse answers with, ``rl``), else ``--label_space``, else the input
    checkpoint's, else the sorted labels of the data. When the rewards' ``labels`` differ
    from the prompts' a warning says so. The prompt style and the detector come from the
    trace dataset (the prompts are built there), else from the input checkpoint, else the
    style is read off the prompts themselves.
    """
    from tag_model.au import get_label_space
    from tag_model.backbones import TagSettings, family_spec, load_tag_settings, resolve_family

    family = resolve_family(family)
    dataset_path = getattr(script_args, "dataset_path", None)
    data = trace_settings(dataset_path, traces)
    model_path = getattr(script_args, "model_name_or_path", None)
    ckpt = None
    if model_path and os.path.isdir(os.path.expanduser(model_path)):
        try:
            ckpt = load_tag_settings(os.path.expanduser(model_path))
        except ValueError as exc:
            logger.warning("ignoring the input checkpoint's settings: %s", exc)
    if data is not None and data.family != family:
        logger.warning(
            "the trace dataset %s was built for %s boxes (%s) but the model is %s (%s): the "
            "boxes in its traces are in the wrong coordinate space for this model",
            dataset_path,
            data.family,
            data.coord_space,
            family,
            family_spec(family).coord_space,
        )
    space = getattr(script_args, "label_space", None)
    named = tuple(get_label_space(space).names) if space else None
    used = tuple(labels) if labels is not None else None
    if data is not None:
        chosen = tuple(data.labels)  # the labels the dataset's prompts list, in their order
    elif used is not None:
        chosen = used
    elif named is not None:
        chosen = named
    elif ckpt is not None:
        chosen = tuple(ckpt.labels)
    elif traces is not None and "label" in traces.column_names:
        chosen = tuple(sorted(set(traces["label"])))
    else:
        raise ValueError("cannot tell the run's label set: pass --label_space")
    if used is not None and used != chosen:
        logger.warning(
            "the rewards parse answers among %s but the prompts list %s: pass --label_space "
            "to make them agree",
            used,
            chosen,
        )
    space = space if named == chosen else None
    if space is None:
        for src in (data, ckpt):
            if src is not None and src.label_space and tuple(src.labels) == chosen:
                space = src.label_space
                break
    labels = chosen
    style = (
        data.prompt_style
        if data is not None
        else _detect_style(traces, family, labels) or (ckpt.prompt_style if ckpt else "full")
    )
    detector = data.detector if data is not None else (ckpt.detector if ckpt else None)
    return TagSettings.for_family(
        family, labels, label_space=space, prompt_style=style, detector=detector
    )


class TagSettingsCallback(TrainerCallback):
    """Writes ``tag_settings.json`` into each saved ``checkpoint-*`` and into ``output_dir``."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def _write(self, directory: str) -> None:
        from tag_model.backbones import save_tag_settings

        save_tag_settings(directory, self.settings)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            self._write(folder)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._write(args.output_dir)


def tag_settings_callback(
    script_args: Any, traces: Any = None, *, family: str, labels: Any = None
) -> TagSettingsCallback:
    """The callback that records this run's settings (see :func:`run_settings`).

    ``tag-train sft``: ``tag_settings_callback(script_args, traces, family=adapter.family)``;
    ``tag-train rl``: ``tag_settings_callback(script_args, traces, family=family,
    labels=labels)``, in the trainer's ``callbacks`` list.
    """
    settings = run_settings(script_args, traces, family=family, labels=labels)
    logger.info("TAG settings of this run: %s", settings.to_dict())
    return TagSettingsCallback(settings)
