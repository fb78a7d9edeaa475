"""``tag-train traces``: wire the arguments to a reader, a teacher and the builder."""

from __future__ import annotations

import logging
import tempfile
from typing import Any

from tag_train._args import TracesArguments
from tag_train.traces._builder import BuildSummary, TraceBuildConfig, build_traces

__all__ = ["load_input", "make_teacher", "run_traces"]

logger = logging.getLogger(__name__)


def make_teacher(args: TracesArguments) -> Any:
    """The teacher named by ``args.teacher``."""
    from tag_train.teachers import HFTeacher, OpenAITeacher, TemplateTeacher

    if args.teacher == "template":
        return TemplateTeacher(answer=args.template_answer, seed=args.seed)  # type: ignore[arg-type]
    if args.teacher == "openai":
        if not args.teacher_model:
            raise ValueError("--teacher openai needs --teacher_model (the served model name)")
        return OpenAITeacher(
            args.base_url,
            args.teacher_model,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            timeout=args.timeout,
            max_retries=args.max_http_retries,
            temperature=args.temperature,
            max_tokens=args.max_new_tokens,
        )
    if args.teacher == "hf":
        if not args.teacher_model:
            raise ValueError("--teacher hf needs --teacher_model (a local path or hub id)")
        return HFTeacher.from_pretrained(
            args.teacher_model, max_new_tokens=args.max_new_tokens, temperature=args.temperature
        )
    raise ValueError(f"unknown teacher {args.teacher!r}; choose template, openai or hf")


def load_input(args: TracesArguments) -> Any:
    """The FER dataset to build from (any ``tag_model.datasets`` reader, or SynthFACS).

    Rows whose image is missing or corrupt fail the load (``DatasetImageError``) unless
    ``--skip_missing``: then they are skipped, and their count is printed.
    """
    if args.dataset == "synth":
        from tag_model.datasets import load_rafdb
        from tag_model.synth import attach_synth_landmarks, write_rafdb_layout

        root = args.data_root or tempfile.mkdtemp(prefix="tag-synth-")
        write_rafdb_layout(root, args.synth_n, size=args.synth_size, seed=args.seed)
        return attach_synth_landmarks(load_rafdb(root, args.split), root)
    if args.data_root is None:
        raise ValueError(f"--dataset {args.dataset} needs --data_root")
    from pathlib import Path

    from tag_model.datasets import load_fer_dataset

    if not Path(args.data_root).exists():
        raise FileNotFoundError(f"--data_root not found: {args.data_root}")
    ds, report = load_fer_dataset(
        args.dataset,
        args.data_root,
        args.split,
        label_space=args.label_space,
        skip_missing=args.skip_missing,
        return_report=True,
    )
    if report.skipped:
        shown = ", ".join((report.missing_images + report.corrupt_images)[:3])
        print(
            f"tag-train traces: skipped {report.skipped} row(s) with missing or corrupt "
            f"images (--skip_missing), e.g. {shown}"
        )
    return ds


def run_traces(args: TracesArguments) -> BuildSummary:
    """Run ``tag-train traces`` with parsed arguments."""
    labels = None
    if args.label_space:
        from tag_model.au import get_label_space

        labels = tuple(get_label_space(args.label_space).names)
    dataset = load_input(args)
    config = TraceBuildConfig(
        family=args.family,
        labels=labels,
        top_k=args.top_k,
        threshold=args.threshold,
        prompt_style=args.prompt_style,
        label_space=args.label_space,
        max_format_retries=args.max_format_retries,
        max_label_retries=args.max_label_retries,
        chunk_size=args.chunk_size,
        min_sharpness=args.min_sharpness,
        min_face_px=args.min_face_px,
        require_face=args.require_face,
        use_dlib=args.use_dlib,
        limit=args.limit,
    )
    teacher = make_teacher(args)
    return build_traces(
        dataset, teacher, args.output_dir, config, progress=args.progress, overwrite=args.overwrite
    )
