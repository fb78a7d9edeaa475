"""``tag-train traces``: wire the arguments to a reader, a detector, a teacher and the builder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tag_train._args import TracesArguments
from tag_train.traces._builder import BuildSummary, TraceBuildConfig, build_traces

__all__ = ["load_input", "make_teacher", "parse_extra_body", "run_traces", "synth_root"]

logger = logging.getLogger(__name__)


def parse_extra_body(text: str | None) -> dict[str, Any]:
    """``--extra_body`` (a JSON object) as a dict; ``{}`` when not given.

    Raises:
        ValueError: not JSON, or JSON that is not an object (the value named).
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--extra_body {text!r} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--extra_body {text!r} must be a JSON object, got {type(value).__name__}")
    return value


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
            extra_body=parse_extra_body(args.extra_body),
        )
    if args.teacher == "hf":
        if not args.teacher_model:
            raise ValueError("--teacher hf needs --teacher_model (a local path or hub id)")
        # device_map "auto" on a CUDA machine (CPU otherwise), the checkpoint's dtype unless
        # --dtype, batches of --chunk_size with left padding
        return HFTeacher.from_pretrained(
            args.teacher_model,
            dtype=args.dtype,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            batch_size=args.chunk_size,
        )
    raise ValueError(f"unknown teacher {args.teacher!r}; choose template, openai or hf")


def load_input(args: TracesArguments) -> Any:
    """The FER dataset to build from (any ``tag_model.datasets`` reader, or SynthFACS).

    Rows whose image is missing or corrupt fail the load (``DatasetImageError``) unless
    ``--skip_missing``: then they are skipped, and their count is printed.
    """
    if args.dataset == "synth":
        from tag_model.datasets import load_rafdb
        from tag_model.synth import attach_synth_landmarks

        root = synth_root(args)
        return attach_synth_landmarks(load_rafdb(root, args.split), root)
    if args.data_root is None:
        raise ValueError(f"--dataset {args.dataset} needs --data_root")
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


def synth_root(args: TracesArguments) -> str:
    """Where ``--dataset synth`` faces are written: ``--data_root``, else a folder under the
    output dir named by the synth settings, so the same command finds the same faces (and
    resumes) and nothing is left in a temporary folder. Written once: a complete folder
    (``.complete`` marker) is reused as it is.
    """
    from tag_model.synth import write_rafdb_layout

    if args.data_root:
        root = Path(args.data_root)
    else:
        name = f"synth-n{args.synth_n}-size{args.synth_size}-seed{args.seed}"
        root = Path(args.output_dir) / "_build" / name
    marker = root / ".complete"
    if not marker.exists():
        write_rafdb_layout(root, args.synth_n, size=args.synth_size, seed=args.seed)
        marker.write_text("written by tag-train traces --dataset synth\n")
    return str(root)


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
        concurrency=args.concurrency,
        prep_workers=args.prep_workers,
        max_requests_per_minute=args.max_requests_per_minute,
        max_consecutive_teacher_errors=args.max_consecutive_teacher_errors,
        shard=args.shard,
        min_sharpness=args.min_sharpness,
        min_face_px=args.min_face_px,
        require_face=args.require_face,
        use_dlib=args.use_dlib,
        limit=args.limit,
    )
    from tag_model.detectors import load_detector

    detector = load_detector(args.detector)  # before the teacher: fail fast on a bad spec
    teacher = make_teacher(args)
    try:
        return build_traces(
            dataset,
            teacher,
            args.output_dir,
            config,
            detector=detector,
            progress=args.progress,
            overwrite=args.overwrite,
        )
    finally:
        close = getattr(teacher, "close", None)
        if callable(close):
            close()
