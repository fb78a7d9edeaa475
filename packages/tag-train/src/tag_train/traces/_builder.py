"""TAG-310K-style trace builder with rejection sampling, resumable and idempotent.

Data flow for each row of a FER dataset (``image, label, label_id, landmarks, source, path``):

quality filter -> landmarks (row, else dlib) -> AU detector -> activated list -> teacher ->
rejection sampling (format must parse, answer must equal the label).

Every finished sample (kept *or* dropped) is appended as one JSON line to
``<output_dir>/_build/records.jsonl``, keyed by its sample id, and flushed + fsynced after
each chunk. A killed build resumes from those records: finished ids are skipped, a torn
last line is discarded, and the final dataset is assembled from the records alone, so
nothing is duplicated and nothing is lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tag_train.teachers._base import ActivatedEntry, Teacher, TeacherReply, TeacherRequest
from tag_train.traces._prompt import teacher_system_prompt, teacher_user_prompt

__all__ = ["BuildSummary", "TraceBuildConfig", "build_traces", "load_records", "student_prompt"]

logger = logging.getLogger(__name__)

_BUILD = "_build"
_RECORDS = "records.jsonl"
_MANIFEST = "manifest.json"


@dataclass
class TraceBuildConfig:
    """Settings of a trace build (recorded in the manifest; a resume must match them).

    Attributes:
        family: target backbone family; boxes in prompts and traces use its coordinates.
        labels: the label set (canonical names, index = label id). ``None``: the sorted
            unique labels of the input dataset.
        top_k, threshold: activated-list settings.
        max_format_retries: extra teacher calls after a trace that does not parse.
        max_label_retries: extra teacher calls after a wrong answer (with label elimination).
        chunk_size: samples prepared and sent to the teacher together (then checkpointed).
        min_sharpness, min_face_px, require_face: quality-filter settings.
        use_dlib: run dlib when a row has no landmarks.
        limit: build at most this many input rows (the first ones).
        prompt_style: the student prompt's style in the ``prompt`` column, ``"full"`` or
            ``"compact"`` (``tag_model.backbones.PROMPT_STYLES``).
        label_space: the name of the label space ``labels`` came from (``"rafdb"``, ...), or
            None; recorded in ``tag_settings.json`` only (``labels`` is what the manifest
            compares on a resume).
    """

    family: str = "qwen2_5_vl"
    labels: tuple[str, ...] | None = None
    top_k: int = 6
    threshold: float = 0.5
    max_format_retries: int = 2
    max_label_retries: int = 2
    chunk_size: int = 16
    min_sharpness: float = 10.0
    min_face_px: int = 48
    require_face: bool = True
    use_dlib: bool = True
    limit: int | None = None
    prompt_style: str = "full"
    label_space: str | None = None


@dataclass
class BuildSummary:
    """Closing counts over the whole build (all runs of it, resumes included)."""

    total: int = 0
    kept: int = 0
    dropped_quality: int = 0
    dropped_no_landmarks: int = 0
    rejected_format: int = 0
    rejected_label: int = 0
    format_failures: int = 0
    label_failures: int = 0
    retries: int = 0
    teacher_errors: int = 0
    quality_reasons: dict[str, int] = field(default_factory=dict)
    output_dir: str = ""
    seconds: float = 0.0

    def as_text(self) -> str:
        q = ", ".join(f"{k}: {v}" for k, v in sorted(self.quality_reasons.items())) or "none"
        return (
            f"trace build: {self.kept}/{self.total} kept | dropped by quality {self.dropped_quality}"
            f" ({q}) | no landmarks {self.dropped_no_landmarks}"
            f" | rejected after retries: format {self.rejected_format}, label {self.rejected_label}"
            f" | format failures {self.format_failures}, label failures {self.label_failures},"
            f" retries {self.retries}, teacher errors {self.teacher_errors}"
            f" | {self.seconds:.1f}s -> {self.output_dir}"
        )


# ----------------------------------------------------------------------------- records I/O


def load_records(output_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read the finished-sample records of a build, truncating a torn last line off the file.

    Returns ``{sample_id: record}``; a later record for the same id wins (never happens in a
    normal build, but makes the reader idempotent).

    Raises:
        tag_model.jsonl.JsonlError: a complete line is not a JSON object (file and line named).
    """
    from tag_model.jsonl import read_jsonl

    records, _ = read_jsonl(Path(output_dir) / _BUILD / _RECORDS, repair=True)
    return {rec["id"]: rec for rec in records}


# ----------------------------------------------------------------------------- helpers


def _sample_id(row: dict[str, Any], index: int) -> str:
    src = row.get("source") or "data"
    path = row.get("path") or ""
    return f"{src}:{index:08d}:{path}"


def _fingerprint(dataset: Any) -> str:
    fp = getattr(dataset, "_fingerprint", None)
    return str(fp) if fp else f"rows={len(dataset)}"


def _to_entries(
    activated: Sequence[Any], adapter: Any, size: tuple[int, int]
) -> tuple[ActivatedEntry, ...]:
    if not activated:
        return ()
    boxes = np.asarray([a.box for a in activated], dtype=np.float32).reshape(-1, 4)
    model = np.asarray(adapter.from_pixels(boxes, size), dtype=np.float32).reshape(-1, 4)
    return tuple(
        ActivatedEntry(
            au=int(a.au),
            prob=float(a.prob),
            box=tuple(float(v) for v in b),
            model_box=tuple(float(v) for v in m),
        )
        for a, b, m in zip(activated, boxes, model, strict=True)
    )


@dataclass
class _Pending:
    index: int
    sid: str
    image: Any
    label: str
    entries: tuple[ActivatedEntry, ...]
    face_box: tuple[float, float, float, float] | None = None
    eliminated: list[str] = field(default_factory=list)
    attempts: int = 0
    format_failures: int = 0
    label_failures: int = 0
    teacher_errors: int = 0
    last_meta: dict[str, Any] = field(default_factory=dict)
    last_user: str = ""
    last_text: str = ""


# ----------------------------------------------------------------------------- builder


def build_traces(
    dataset: Any,
    teacher: Teacher,
    output_dir: str | os.PathLike[str],
    config: TraceBuildConfig | None = None,
    *,
    detector: Any = None,
    quality: Any = None,
    progress: bool = True,
    overwrite: bool = False,
) -> BuildSummary:
    """Build (or resume) a TAG trace dataset and save it with ``save_to_disk``.

    Args:
        dataset: a ``datasets.Dataset`` from any ``tag_model.datasets`` reader.
        teacher: any :class:`~tag_train.teachers.Teacher`.
        output_dir: where the dataset is saved (``datasets.load_from_disk(output_dir)``);
            ``output_dir/_build`` holds the records, the manifest and ``summary.json``.
        config: build settings.
        detector: an ``AUDetector`` (default ``GeometricAUDetector()``).
        quality: a ``QualityFilter`` (default built from ``config``).
        overwrite: start from scratch even if a build with other settings exists.

    Returns:
        The :class:`BuildSummary` over all records (resumed runs included).

    Output columns: ``id, image, label, label_id, source, path, activated`` (list of
    ``{au, prob, box}``, box in image pixels), ``prompt`` (the student's chat messages),
    ``teacher_prompt``, ``trace``, ``teacher`` (name) and ``teacher_meta`` (JSON text: model,
    attempts, failures, eliminated labels, latency, ...).
    """
    from tag_model.activation import build_activated_list
    from tag_model.au import AU_CATALOGUE
    from tag_model.backbones import PROMPT_STYLES, get_adapter
    from tag_model.grounding import parse_trace
    from tag_model.jsonl import append_jsonl

    cfg = config or TraceBuildConfig()
    t0 = time.perf_counter()
    out = Path(output_dir)
    build = out / _BUILD
    if cfg.prompt_style not in PROMPT_STYLES:
        raise ValueError(
            f"TraceBuildConfig.prompt_style: unknown style {cfg.prompt_style!r}; "
            f"use one of {', '.join(PROMPT_STYLES)}"
        )
    labels = tuple(cfg.labels) if cfg.labels else tuple(sorted(set(dataset["label"])))
    n_rows = len(dataset) if cfg.limit is None else min(cfg.limit, len(dataset))
    manifest = {
        "dataset_fingerprint": _fingerprint(dataset),
        "rows": n_rows,
        "teacher": teacher.name,
        "config": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k != "label_space"},
            "labels": list(labels),
        },
    }
    build.mkdir(parents=True, exist_ok=True)
    man_path = build / _MANIFEST
    if man_path.exists() and not overwrite:
        old = json.loads(man_path.read_text())
        if old != json.loads(json.dumps(manifest)):
            raise ValueError(
                f"{man_path}: an unfinished build with other settings is here "
                f"(was {old}, now {manifest}); pass overwrite=True (--overwrite) to start over"
            )
    elif overwrite:
        for p in (build / _RECORDS, man_path):
            p.unlink(missing_ok=True)
    man_path.write_text(json.dumps(manifest, indent=2))

    records = load_records(out)
    adapter = get_adapter(cfg.family)
    if detector is None:
        from tag_model.detectors import GeometricAUDetector

        detector = GeometricAUDetector()
    if quality is None:
        from tag_model.quality import QualityFilter

        quality = QualityFilter(
            min_sharpness=cfg.min_sharpness,
            min_face_px=cfg.min_face_px,
            require_face=cfg.require_face,
        )
    system = teacher_system_prompt(cfg.family)
    au_names = {k: v.name for k, v in AU_CATALOGUE.items()}

    rec_path = build / _RECORDS
    # ids only need path/source: select those columns to avoid decoding images
    meta_cols = [c for c in ("source", "path") if c in dataset.column_names]
    light = dataset.select_columns(meta_cols) if meta_cols else None
    ids = [_sample_id(light[i] if light is not None else {}, i) for i in range(n_rows)]
    todo = [i for i in range(n_rows) if ids[i] not in records]

    bar = tqdm(total=n_rows, initial=n_rows - len(todo), desc="traces", disable=not progress)
    for start in range(0, len(todo), cfg.chunk_size):
        chunk = todo[start : start + cfg.chunk_size]
        done: list[dict[str, Any]] = []
        pending: list[_Pending] = []
        for i in chunk:
            row = dataset[i]
            sid = ids[i]
            image = row["image"].convert("RGB")
            w, h = image.size
            lm = row.get("landmarks")
            lm = None if lm is None else np.asarray(lm, dtype=np.float32).reshape(-1, 2)
            if lm is None and cfg.use_dlib:
                from tag_model.faces import dlib_landmarks

                lm = dlib_landmarks(image)
            verdict = quality.check(image, lm, key=sid)
            if not verdict.ok:
                done.append(
                    {"id": sid, "index": i, "status": "dropped_quality", "reason": verdict.reason}
                )
                continue
            if lm is None:
                done.append(
                    {
                        "id": sid,
                        "index": i,
                        "status": "dropped_no_landmarks",
                        "reason": "no landmarks",
                    }
                )
                continue
            probs = detector.predict(image=image, landmarks=lm)
            act = build_activated_list(lm, (w, h), probs, top_k=cfg.top_k, threshold=cfg.threshold)
            fb = np.array(
                [[lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()]], dtype=np.float32
            )
            fb = np.clip(fb, 0, [w, h, w, h]).astype(np.float32)
            face_box = tuple(
                float(v) for v in np.asarray(adapter.from_pixels(fb, (w, h))).reshape(4)
            )
            pending.append(
                _Pending(
                    index=i,
                    sid=sid,
                    image=image,
                    label=row["label"],
                    entries=_to_entries(act, adapter, (w, h)),
                    face_box=face_box,
                )
            )

        max_attempts = 1 + cfg.max_format_retries + cfg.max_label_retries
        while pending:
            reqs = []
            for p in pending:
                p.last_user = teacher_user_prompt(
                    labels, p.entries, eliminated=p.eliminated, au_names=au_names
                )
                reqs.append(
                    TeacherRequest(
                        sample_id=p.sid,
                        image=p.image,
                        labels=labels,
                        activated=p.entries,
                        system=system,
                        user=p.last_user,
                        eliminated=tuple(p.eliminated),
                        attempt=p.attempts,
                        label=p.label if teacher.uses_gold_label else None,
                        face_box=p.face_box,
                    )
                )
            replies: list[TeacherReply] = teacher.generate(reqs)
            still: list[_Pending] = []
            for p, rep in zip(pending, replies, strict=True):
                p.attempts += 1
                p.last_meta = dict(rep.meta)
                p.last_text = rep.text
                if rep.meta.get("error"):
                    p.teacher_errors += 1
                parsed = parse_trace(rep.text, labels=labels)
                status = None
                if not parsed.format_ok:
                    p.format_failures += 1
                    if p.format_failures > cfg.max_format_retries or p.attempts >= max_attempts:
                        status = "rejected_format"
                elif parsed.answer != p.label:
                    p.label_failures += 1
                    if parsed.answer and parsed.answer not in p.eliminated:
                        p.eliminated.append(parsed.answer)
                    if p.label_failures > cfg.max_label_retries or p.attempts >= max_attempts:
                        status = "rejected_label"
                else:
                    status = "kept"
                if status is None:
                    still.append(p)
                    continue
                done.append(_record(p, status, teacher.name))
            pending = still
        append_jsonl(rec_path, done)
        for r in done:
            records[r["id"]] = r
        bar.update(len(chunk))
    bar.close()

    summary = _summarise(records.values(), n_rows)
    summary.output_dir = str(out)
    _assemble(dataset, records, ids[:n_rows], out, cfg, labels, adapter)
    _save_settings(out, cfg, labels, detector)
    summary.seconds = time.perf_counter() - t0
    (build / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2))
    logger.info(summary.as_text())
    return summary


_DETECTORS = {
    "GeometricAUDetector": "geometric",
    "OpenFaceCSVDetector": "openface",
    "PyFeatDetector": "pyfeat",
}


def _detector_name(detector: Any) -> str | None:
    """The short name of an AU detector (``geometric``, ``openface``, ``pyfeat``, ...)."""
    if detector is None:
        return None
    name = _DETECTORS.get(type(detector).__name__)
    return name or getattr(detector, "name", None) or type(detector).__name__


def _save_settings(
    out: Path, cfg: TraceBuildConfig, labels: tuple[str, ...], detector: Any
) -> None:
    """``tag_settings.json`` next to the dataset: what its prompts and boxes mean.

    ``tag-train sft|rl`` copy it (with the trained model's family) into their checkpoints.
    """
    from tag_model.backbones import TagSettings, save_tag_settings

    if not labels:
        logger.warning("%s: no labels (an empty input dataset): no tag_settings.json", out)
        return
    space = cfg.label_space
    if space:
        from tag_model.au import get_label_space

        if tuple(get_label_space(space).names) != tuple(labels):
            space = None  # the labels were given explicitly and are not that space
    save_tag_settings(
        out,
        TagSettings.for_family(
            cfg.family,
            labels,
            label_space=space,
            prompt_style=cfg.prompt_style,
            detector=_detector_name(detector),
        ),
    )


def _record(p: _Pending, status: str, teacher_name: str) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": p.sid,
        "index": p.index,
        "status": status,
        "attempts": p.attempts,
        "format_failures": p.format_failures,
        "label_failures": p.label_failures,
        "teacher_errors": p.teacher_errors,
        "eliminated": list(p.eliminated),
    }
    if status == "kept":
        rec.update(
            trace=p.last_text,
            teacher_prompt=p.last_user,
            teacher=teacher_name,
            teacher_meta={k: v for k, v in p.last_meta.items() if _jsonable(v)},
            activated=[{"au": e.au, "prob": e.prob, "box": list(e.box)} for e in p.entries],
        )
    return rec


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def _summarise(records: Any, total: int) -> BuildSummary:
    s = BuildSummary(total=total)
    for r in records:
        st = r["status"]
        if st == "kept":
            s.kept += 1
        elif st == "dropped_quality":
            s.dropped_quality += 1
            reason = r.get("reason") or "unknown"
            s.quality_reasons[reason] = s.quality_reasons.get(reason, 0) + 1
        elif st == "dropped_no_landmarks":
            s.dropped_no_landmarks += 1
        elif st == "rejected_format":
            s.rejected_format += 1
        elif st == "rejected_label":
            s.rejected_label += 1
        s.format_failures += int(r.get("format_failures", 0))
        s.label_failures += int(r.get("label_failures", 0))
        s.teacher_errors += int(r.get("teacher_errors", 0))
        s.retries += max(0, int(r.get("attempts", 0)) - 1)
    return s


def _assemble(
    dataset: Any,
    records: dict[str, dict[str, Any]],
    ids: Sequence[str],
    out: Path,
    cfg: TraceBuildConfig,
    labels: tuple[str, ...],
    adapter: Any,
) -> None:
    import datasets as hfds

    kept = [records[sid] for sid in ids if sid in records and records[sid]["status"] == "kept"]
    keep_cols = [
        c
        for c in ("image", "label", "label_id", "landmarks", "source", "path")
        if c in dataset.column_names
    ]
    base = dataset.select([r["index"] for r in kept]).select_columns(keep_cols)
    sizes = [tuple(im.size) for im in base.select_columns(["image"])["image"]] if kept else []
    cache: dict[tuple[int, int], list[dict[str, str]]] = {}
    prompts = [
        cache.setdefault(sz, student_prompt(adapter, labels, sz, cfg.prompt_style)) for sz in sizes
    ]
    extra = hfds.Dataset.from_dict(
        {
            "id": [r["id"] for r in kept],
            "activated": [
                [
                    {
                        "au": int(a["au"]),
                        "prob": float(a["prob"]),
                        "box": [float(v) for v in a["box"]],
                    }
                    for a in r["activated"]
                ]
                for r in kept
            ],
            "prompt": prompts,
            "teacher_prompt": [r["teacher_prompt"] for r in kept],
            "trace": [r["trace"] for r in kept],
            "teacher": [r["teacher"] for r in kept],
            "teacher_meta": [
                json.dumps(
                    {
                        **r["teacher_meta"],
                        "attempts": r["attempts"],
                        "format_failures": r["format_failures"],
                        "label_failures": r["label_failures"],
                        "eliminated": r["eliminated"],
                    }
                )
                for r in kept
            ],
        },
        features=hfds.Features(
            {
                "id": hfds.Value("string"),
                "activated": hfds.List(
                    {
                        "au": hfds.Value("int32"),
                        "prob": hfds.Value("float32"),
                        "box": hfds.List(hfds.Value("float32"), length=4),
                    }
                ),
                "prompt": hfds.List(
                    {"role": hfds.Value("string"), "content": hfds.Value("string")}
                ),
                "teacher_prompt": hfds.Value("string"),
                "trace": hfds.Value("string"),
                "teacher": hfds.Value("string"),
                "teacher_meta": hfds.Value("string"),
            }
        ),
    )
    final = hfds.concatenate_datasets([base, extra], axis=1)
    for p in out.iterdir():  # replace a previous assembly, keep _build
        if (p.name.startswith("data-") and p.suffix == ".arrow") or p.name in (
            "dataset_info.json",
            "state.json",
        ):
            p.unlink()
    final.save_to_disk(str(out), num_shards=1 if len(final) == 0 else None)


def student_prompt(
    adapter: Any, labels: Sequence[str], image_size: tuple[int, int], style: str = "full"
) -> list[dict[str, str]]:
    """The student's chat prompt for an image of ``image_size``, as TRL conversational messages.

    ``style`` is the instruction's style (``"full"`` or ``"compact"``).

    Content is plain text (``[{"role", "content"}]``); TRL inserts the image placeholder
    before the user text and fills it from the ``image`` column.
    """
    from PIL import Image
    from tag_model.backbones import build_messages
    from tag_model.grounding import content_text

    msgs = build_messages(
        Image.new("RGB", tuple(int(v) for v in image_size)),
        tuple(labels),
        grounded=True,
        family=adapter,
        style=style,
    )
    return [{"role": str(m["role"]), "content": content_text(m.get("content"))} for m in msgs]
