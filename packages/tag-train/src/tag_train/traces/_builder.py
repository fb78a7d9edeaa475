"""TAG-310K-style trace builder with rejection sampling: streaming, resumable, idempotent.

Data flow for each row of a FER dataset (``image, label, label_id, landmarks, source, path``):

quality filter -> landmarks (row, else dlib) -> AU detector -> activated list -> teacher ->
rejection sampling (format must parse, answer must equal the label).

**Streaming.** A pool of ``prep_workers`` threads prepares faces (decode, quality filter,
landmarks, detector, activated list) ahead of the teacher, and ``concurrency`` requests stay
in flight at all times (a teacher with ``batch_size > 1``, the local HF one, gets whole
batches instead, one at a time). There is no chunk barrier: a retry goes out as soon as its
reply is judged, a new face as soon as a slot frees. ``max_requests_per_minute`` caps the
request rate.

**Nothing lost.** Every face that finishes (kept, dropped or rejected) is appended as one
JSON line to ``<output_dir>/_build/records.jsonl`` the moment it finishes, flushed and
fsynced. A teacher request that fails after its HTTP retries (connection error, timeout,
5xx, 429) is a ``teacher_error``, never a format failure, and never final: the face is
recorded as ``teacher_error`` and the next run of the same command asks again (from its first
attempt). After ``max_consecutive_teacher_errors`` failed requests in a row the build stops
with :class:`TeacherOutageError`. A killed build resumes from the records: finished ids are
skipped, a torn last line is discarded, and the final dataset is assembled from the records
alone, in dataset order, so nothing is duplicated or lost and, with a deterministic teacher,
the output equals an uninterrupted build's.

**Shards.** ``shard="I/N"`` builds rows ``i`` with ``i % N == I`` (ids keep the dataset row
index); :func:`~tag_train.traces.combine_shards` joins the shard outputs.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tag_train.teachers._base import ActivatedEntry, Teacher, TeacherReply, TeacherRequest
from tag_train.traces._prompt import teacher_system_prompt, teacher_user_prompt

__all__ = [
    "FINAL_STATUSES",
    "BuildSummary",
    "TeacherOutageError",
    "TraceBuildConfig",
    "build_traces",
    "load_records",
    "parse_shard",
    "student_prompt",
]

logger = logging.getLogger(__name__)

_BUILD = "_build"
#: faces per prep task: amortises the Arrow read, the detector and the activated-list kernel
_PREP_CHUNK = 8
_RECORDS = "records.jsonl"
_MANIFEST = "manifest.json"

FINAL_STATUSES = frozenset(
    {"kept", "dropped_quality", "dropped_no_landmarks", "rejected_format", "rejected_label"}
)
"""Record statuses a resumed build skips; ``teacher_error`` is not one of them."""

#: settings that change how fast a build runs, not what it builds (not compared on resume)
_RUNTIME_FIELDS = frozenset(
    {
        "label_space",
        "chunk_size",
        "concurrency",
        "prep_workers",
        "max_requests_per_minute",
        "max_consecutive_teacher_errors",
    }
)


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
        chunk_size: requests per ``generate`` call for a teacher that batches
            (``teacher.batch_size > 1``, the HF one); streaming teachers get one request per
            call.
        concurrency: teacher calls in flight at once (streaming teachers).
        prep_workers: threads preparing faces ahead of the teacher.
        max_requests_per_minute: cap on teacher requests started per minute (None: no cap).
        max_consecutive_teacher_errors: stop the build (:class:`TeacherOutageError`) after
            this many failed teacher requests in a row.
        shard: ``"I/N"``: build only rows ``i`` with ``i % N == I``; None: every row.
        min_sharpness, min_face_px, require_face: quality-filter settings.
        use_dlib: run dlib when a row has no landmarks.
        limit: build at most this many input rows (the first ones).
        prompt_style: the student prompt's style in the ``prompt`` column, ``"full"`` or
            ``"compact"`` (``tag_model.backbones.PROMPT_STYLES``).
        label_space: the name of the label space ``labels`` came from (``"rafdb"``, ...), or
            None; recorded in ``tag_settings.json`` only (``labels`` is what the manifest
            compares on a resume).

    ``chunk_size``, ``concurrency``, ``prep_workers``, ``max_requests_per_minute`` and
    ``max_consecutive_teacher_errors`` only change speed and may differ between runs.
    """

    family: str = "qwen2_5_vl"
    labels: tuple[str, ...] | None = None
    top_k: int = 6
    threshold: float = 0.5
    max_format_retries: int = 2
    max_label_retries: int = 2
    chunk_size: int = 16
    concurrency: int = 8
    prep_workers: int = 2
    max_requests_per_minute: float | None = None
    max_consecutive_teacher_errors: int = 20
    shard: str | None = None
    min_sharpness: float = 10.0
    min_face_px: int = 48
    require_face: bool = True
    use_dlib: bool = True
    limit: int | None = None
    prompt_style: str = "full"
    label_space: str | None = None


@dataclass
class BuildSummary:
    """Closing counts over the whole build (all runs of it, resumes included).

    ``kept``, ``dropped_*``, ``rejected_*`` count finished faces; ``teacher_error`` counts
    faces whose last teacher request failed (the next run retries them) and ``not_built``
    faces with no record yet (a run stopped by an outage). ``teacher_errors`` and
    ``requests`` count failed and sent teacher requests of this run only.
    """

    total: int = 0
    kept: int = 0
    dropped_quality: int = 0
    dropped_no_landmarks: int = 0
    rejected_format: int = 0
    rejected_label: int = 0
    teacher_error: int = 0
    not_built: int = 0
    format_failures: int = 0
    label_failures: int = 0
    retries: int = 0
    teacher_errors: int = 0
    requests: int = 0
    quality_reasons: dict[str, int] = field(default_factory=dict)
    shard: str | None = None
    output_dir: str = ""
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Every face of the build (shard) has a final record."""
        return self.teacher_error == 0 and self.not_built == 0

    def as_text(self) -> str:
        q = ", ".join(f"{k}: {v}" for k, v in sorted(self.quality_reasons.items())) or "none"
        shard = f" (shard {self.shard})" if self.shard else ""
        text = (
            f"trace build{shard}: {self.kept}/{self.total} kept | dropped by quality "
            f"{self.dropped_quality} ({q}) | no landmarks {self.dropped_no_landmarks}"
            f" | rejected after retries: format {self.rejected_format}, label {self.rejected_label}"
            f" | teacher_error {self.teacher_error}, not built {self.not_built}"
            f" | format failures {self.format_failures}, label failures {self.label_failures},"
            f" retries {self.retries}, failed requests {self.teacher_errors}/{self.requests}"
            f" | {self.seconds:.1f}s -> {self.output_dir}"
        )
        return text


class TeacherOutageError(RuntimeError):
    """The teacher failed ``max_consecutive_teacher_errors`` requests in a row: the build
    stopped. Everything finished so far is recorded; rerun the same command to resume.

    Attributes:
        summary: the :class:`BuildSummary` at the stop (also in ``_build/summary.json``).
    """

    def __init__(self, message: str, summary: BuildSummary) -> None:
        super().__init__(message)
        self.summary = summary


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` -> ``(0, 1)``.

    Raises:
        ValueError: not of the form ``I/N`` (the value named).
    """
    if shard is None or shard == "":
        return 0, 1
    text = str(shard).strip()
    parts = text.split("/")
    try:
        i, n = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--shard {shard!r}: expected I/N, e.g. 0/4 (shard I of N)") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {shard!r}: need 0 <= I < N, got I={i}, N={n}")
    return i, n


# ----------------------------------------------------------------------------- records I/O


def load_records(output_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read the finished-sample records of a build, truncating a torn last line off the file.

    Returns ``{sample_id: record}``; a later record for the same id wins (a face recorded as
    ``teacher_error`` and finished by a later run has both lines; the final one counts).

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
    """What identifies the input rows: a hash of each row's ``source``, relative ``path`` and
    ``label`` (no image decoding), so the same dataset under another root or on another
    machine (one shard per machine) has the same fingerprint. Without a ``path`` column:
    the ``datasets`` fingerprint."""
    import hashlib

    cols = [c for c in ("source", "path", "label") if c in dataset.column_names]
    if "path" not in cols:
        fp = getattr(dataset, "_fingerprint", None)
        return str(fp) if fp else f"rows={len(dataset)}"
    h = hashlib.sha256()
    table = dataset.select_columns(cols)
    for start in range(0, len(table), 65536):
        part = table[start : start + 65536]
        h.update(json.dumps([part[c] for c in cols], ensure_ascii=False).encode())
    return f"rows={len(dataset)}:sha256={h.hexdigest()[:32]}"


def _to_entries(
    activated: Sequence[Any], adapter: Any, size: tuple[int, int]
) -> tuple[ActivatedEntry, ...]:
    if not activated:
        return ()
    boxes = np.asarray([a.box for a in activated], dtype=np.float32).reshape(-1, 4)
    model = np.asarray(adapter.from_pixels(boxes, size), dtype=np.float32).reshape(-1, 4)
    return tuple(  # tolist(): Python floats at once, not one float() per NumPy scalar
        ActivatedEntry(au=int(a.au), prob=float(a.prob), box=tuple(b), model_box=tuple(m))
        for a, b, m in zip(activated, boxes.tolist(), model.tolist(), strict=True)
    )


@dataclass
class _Pending:
    index: int
    sid: str
    image: Any
    label: str
    entries: tuple[ActivatedEntry, ...]
    face_box: tuple[float, float, float, float] | None = None
    encoded_image: bytes | None = None
    eliminated: list[str] = field(default_factory=list)
    attempts: int = 0
    format_failures: int = 0
    label_failures: int = 0
    last_meta: dict[str, Any] = field(default_factory=dict)
    last_user: str = ""
    last_text: str = ""


class _Workers:
    """``n`` daemon threads running ``fn(arg)`` for submitted tasks; each outcome goes to
    ``results`` as ``(tag, arg, result, exception)``.

    Daemon threads: a build stopped by an outage returns at once, without waiting for the
    requests still hanging on a dead server (their results are never read).
    """

    def __init__(
        self,
        n: int,
        results: queue.SimpleQueue,
        name: str,
        init: Callable[[], None] | None = None,
    ) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._results = results
        self._stop = threading.Event()
        self._n = n
        self._init = init
        for k in range(n):
            threading.Thread(target=self._loop, name=f"{name}-{k}", daemon=True).start()

    def _loop(self) -> None:
        if self._init is not None:
            self._init()
        while True:
            item = self._tasks.get()
            if item is None:
                return
            if self._stop.is_set():
                continue
            tag, fn, arg = item
            try:
                out = (tag, arg, fn(arg), None)
            except BaseException as exc:  # handed to the coordinating thread
                out = (tag, arg, None, exc)
            if not self._stop.is_set():
                self._results.put(out)

    def submit(self, tag: str, fn: Callable[[Any], Any], arg: Any) -> None:
        self._tasks.put((tag, fn, arg))

    def close(self) -> None:
        self._stop.set()
        for _ in range(self._n):
            self._tasks.put(None)


def _serial_kernels() -> None:
    """Run the numba kernels (regions, activated list) serially in this thread.

    One face per call: a parallel launch costs far more than the work (measured ~30 ms vs
    0.5 ms per face on a busy 2-core machine), and the prep pool is the parallelism.
    ``numba.set_num_threads`` is thread-local, so other threads keep their setting.
    """
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(1)


class _RateLimiter:
    """Spaces request starts ``60 / per_minute`` seconds apart (shared by all threads)."""

    def __init__(self, per_minute: float | None) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError(f"max_requests_per_minute must be > 0, got {per_minute}")
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, n: int = 1) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval * n
        if start > now:
            time.sleep(start - now)


class _RecordFile:
    """``records.jsonl`` appended by one writer thread: each finished face is queued at once
    and written, flushed and fsynced with whatever else finished meanwhile (group commit),
    so the coordinating thread never waits on the disk.

    A kill -9 loses at most the records still queued (those faces are simply built again by
    the next run); a torn last line is repaired by :func:`load_records`.
    """

    def __init__(self, path: Path) -> None:
        self._fh = path.open("a", encoding="utf-8")
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="trace-records", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        done = False
        while not done:
            lines = [self._q.get()]
            while True:
                try:
                    lines.append(self._q.get_nowait())
                except queue.Empty:
                    break
            done = None in lines
            text = "".join(x for x in lines if x is not None)
            if text and self._error is None:
                try:
                    self._fh.write(text)
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError as exc:  # disk full...: raised by write() / close()
                    self._error = exc

    def write(self, record: dict[str, Any]) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._fh.close()
        if self._error is not None:
            raise self._error


def _raw_image_view(dataset: Any) -> tuple[Any, Any]:
    """``(view, feature)``: ``dataset`` with its ``image`` column left undecoded (rows give
    ``{"bytes", "path"}``) and the column's ``datasets.Image`` feature; ``(None, None)`` when
    the dataset has no decoding ``Image`` column (then rows are read as they are)."""
    try:
        import datasets as hfds
    except ImportError:  # pragma: no cover
        return None, None
    feature = getattr(dataset, "features", {}).get("image")
    if not isinstance(feature, hfds.Image) or not feature.decode or dataset.format["type"]:
        return None, None
    return dataset.cast_column("image", hfds.Image(decode=False, mode=feature.mode)), feature


def _decode_image(value: dict[str, Any], feature: Any) -> tuple[Any, bytes | None]:
    """Decode one undecoded ``image`` cell as ``datasets.Image.decode_example`` does (EXIF
    orientation applied, the feature's ``mode``), and keep the file's bytes when they can be
    sent as they are: a still PNG, JPEG or WEBP in RGB or grayscale with no EXIF orientation
    (a server might not rotate it). One ``Image.open``: parsing a JPEG header is not free."""
    import io

    from PIL import Image, ImageOps

    data, path = value.get("bytes"), value.get("path")
    if data is None and path and os.path.isfile(path):
        data = Path(path).read_bytes()
    if data is None:  # a remote path: datasets fetches it
        return feature.decode_example(value), None
    image = Image.open(io.BytesIO(data))
    image.load()
    oriented = image.getexif().get(Image.ExifTags.Base.Orientation) is not None
    plain = (
        image.format in ("PNG", "JPEG", "WEBP")
        and image.mode in ("RGB", "L")
        and not getattr(image, "is_animated", False)
        and not oriented
    )
    if oriented:
        image = ImageOps.exif_transpose(image)
    if feature.mode and feature.mode != image.mode:
        image = image.convert(feature.mode)
    return image, data if plain else None


def _as_detector(detector: Any) -> Any:
    """A :class:`tag_model.detectors.LoadedDetector` for a spec, a loaded one or a raw
    ``AUDetector`` object."""
    from tag_model.detectors import LoadedDetector, load_detector

    if detector is None:
        return load_detector("geometric")
    if isinstance(detector, (str, LoadedDetector)):
        return load_detector(detector)
    name = _detector_name(detector) or "custom"
    return LoadedDetector(
        name, name, {}, detector, thread_safe=bool(getattr(detector, "thread_safe", False))
    )


# ----------------------------------------------------------------------------- builder


@contextlib.contextmanager
def _old_objects_frozen():
    """Keep the cyclic GC off the objects that existed before the build while it runs.

    A full (generation-2) collection walks the whole heap; in a process that holds a large
    one (a notebook, a test session, a loaded dataset) one such pass in the middle of a build
    stalls every thread for a while (measured: 1 build in 4 took 0.4 s longer, standalone).
    ``gc.freeze`` moves the existing objects out of the collector's reach; the build's own
    garbage is still collected, and ``gc.unfreeze`` hands everything back afterwards. A
    process that froze objects itself (``gc.get_freeze_count() > 0``) is left as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@_old_objects_frozen()  # a contextmanager is also a decorator: entered anew on each call
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
        teacher: any :class:`~tag_train.teachers.Teacher`. One with ``batch_size > 1``
            gets batches of ``config.chunk_size`` requests, one batch at a time; any other
            gets one request per ``generate`` call, ``config.concurrency`` calls at once.
        output_dir: where the dataset is saved (``datasets.load_from_disk(output_dir)``);
            ``output_dir/_build`` holds the records, the manifest and ``summary.json``.
        config: build settings.
        detector: a ``--detector`` spec (``"geometric"``, ``"openface:DIR_OR_CSV"``,
            ``"pyfeat"``, ``"module:Class"``; see :func:`tag_model.detectors.load_detector`),
            a loaded one, or any ``AUDetector`` object. Default ``"geometric"``. Its name and
            settings go in the manifest and in each row's ``teacher_meta``.
        quality: a ``QualityFilter`` (default built from ``config``).
        overwrite: start from scratch even if a build with other settings exists.

    Returns:
        The :class:`BuildSummary` over all records (resumed runs included). Faces left in
        ``teacher_error`` are counted there (``summary.complete`` is False); rerun to
        finish them.

    Raises:
        TeacherOutageError: ``config.max_consecutive_teacher_errors`` teacher requests failed
            in a row; the records and ``summary.json`` are written, the dataset is not
            assembled.

    Output columns: ``id, image, label, label_id, source, path, activated`` (list of
    ``{au, prob, box}``, box in image pixels), ``prompt`` (the student's chat messages),
    ``teacher_prompt``, ``trace``, ``teacher`` (name) and ``teacher_meta`` (JSON text: model,
    attempts, failures, eliminated labels, latency, detector, ...).
    """
    from tag_model.activation import build_activated_list, build_activated_lists
    from tag_model.au import AU_CATALOGUE
    from tag_model.backbones import PROMPT_STYLES, get_adapter
    from tag_model.grounding import parse_trace

    cfg = config or TraceBuildConfig()
    t0 = time.perf_counter()
    out = Path(output_dir)
    build = out / _BUILD
    if cfg.prompt_style not in PROMPT_STYLES:
        raise ValueError(
            f"TraceBuildConfig.prompt_style: unknown style {cfg.prompt_style!r}; "
            f"use one of {', '.join(PROMPT_STYLES)}"
        )
    for name in ("concurrency", "prep_workers", "chunk_size", "max_consecutive_teacher_errors"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"TraceBuildConfig.{name} must be >= 1, got {getattr(cfg, name)}")
    shard_i, shard_n = parse_shard(cfg.shard)
    limiter = _RateLimiter(cfg.max_requests_per_minute)
    det = _as_detector(detector)
    labels = tuple(cfg.labels) if cfg.labels else tuple(sorted(set(dataset["label"])))
    n_rows = len(dataset) if cfg.limit is None else min(cfg.limit, len(dataset))
    manifest = {
        "dataset_fingerprint": _fingerprint(dataset),
        "rows": n_rows,
        "teacher": teacher.name,
        "detector": det.describe(),
        "config": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUNTIME_FIELDS},
            "labels": list(labels),
        },
    }
    build.mkdir(parents=True, exist_ok=True)
    man_path = build / _MANIFEST
    if man_path.exists() and not overwrite:
        old = json.loads(man_path.read_text())
        if old != json.loads(json.dumps(manifest)):
            changed = sorted(
                k
                for k in set(old) | set(manifest)
                if old.get(k) != json.loads(json.dumps(manifest)).get(k)
            )
            raise ValueError(
                f"{man_path}: an unfinished build with other settings is here (differs in "
                f"{', '.join(changed)}: was {old}, now {manifest}); pass overwrite=True "
                "(--overwrite) to start over"
            )
    elif overwrite:
        for p in (build / _RECORDS, man_path):
            p.unlink(missing_ok=True)
    man_path.write_text(json.dumps(manifest, indent=2))

    records = load_records(out)
    adapter = get_adapter(cfg.family)
    if quality is None:
        from tag_model.quality import QualityFilter

        quality = QualityFilter(
            min_sharpness=cfg.min_sharpness,
            min_face_px=cfg.min_face_px,
            require_face=cfg.require_face,
        )
    system = teacher_system_prompt(cfg.family)
    au_names = {k: v.name for k, v in AU_CATALOGUE.items()}
    det_meta = det.describe()

    # ids only need path/source: select those columns to avoid decoding images
    meta_cols = [c for c in ("source", "path") if c in dataset.column_names]
    light = dataset.select_columns(meta_cols) if meta_cols else None
    indices = [i for i in range(n_rows) if i % shard_n == shard_i]
    rows_meta = light.select(indices) if light is not None else None
    ids = {
        i: _sample_id(rows_meta[k] if rows_meta is not None else {}, i)
        for k, i in enumerate(indices)
    }
    todo = [i for i in indices if records.get(ids[i], {}).get("status") not in FINAL_STATUSES]

    det_lock = threading.Lock()
    dlib_lock = threading.Lock()

    raw_view, image_feature = _raw_image_view(dataset)

    def prepare(chunk: list[int]) -> list[dict[str, Any] | _Pending]:
        """Prepare a few faces at once: one Arrow read, one detector pass and one activated-
        list kernel call for the chunk (per-face Python overhead was the builder's largest
        CPU cost); a record ``dict`` for a dropped face, else a :class:`_Pending`."""
        if raw_view is not None:  # the files' bytes too: sent as they are, never re-encoded
            cols = raw_view[chunk]
            rows = [{k: v[j] for k, v in cols.items()} for j in range(len(chunk))]
            decoded = [_decode_image(r["image"], image_feature) for r in rows]
        else:
            rows = [dataset[i] for i in chunk]
            decoded = [(r["image"], None) for r in rows]
        out: list[dict[str, Any] | _Pending] = []
        faces: list[tuple[int, dict[str, Any], Any, bytes | None, np.ndarray]] = []
        for i, row, (image, encoded) in zip(chunk, rows, decoded, strict=True):
            sid = ids[i]
            image = image.convert("RGB")
            lm = row.get("landmarks")
            lm = None if lm is None else np.asarray(lm, dtype=np.float32).reshape(-1, 2)
            if lm is None and cfg.use_dlib:
                from tag_model.faces import dlib_landmarks

                with dlib_lock:
                    lm = dlib_landmarks(image)
            verdict = quality.check(image, lm, key=sid)
            if not verdict.ok:
                out.append(
                    {"id": sid, "index": i, "status": "dropped_quality", "reason": verdict.reason}
                )
            elif lm is None:
                out.append(
                    {
                        "id": sid,
                        "index": i,
                        "status": "dropped_no_landmarks",
                        "reason": "no landmarks",
                    }
                )
            else:
                faces.append((i, row, image, encoded, lm))
        if not faces:
            return out
        images = [f[2] for f in faces]
        lms = [f[4] for f in faces]
        args = dict(indices=[f[0] for f in faces], paths=[f[1].get("path") for f in faces])
        if det.thread_safe:
            probs = det.predict_many(images, lms, **args)
        else:
            with det_lock:
                probs = det.predict_many(images, lms, **args)
        sizes = np.array([im.size for im in images], dtype=np.float32)  # [N, 2]: (w, h)
        if len({lm.shape for lm in lms}) == 1:
            acts = build_activated_lists(
                np.stack(lms), sizes, probs, top_k=cfg.top_k, threshold=cfg.threshold
            )
        else:  # not 68 points: the per-face call raises the clear error
            acts = [
                build_activated_list(lm, im.size, p, top_k=cfg.top_k, threshold=cfg.threshold)
                for lm, im, p in zip(lms, images, probs, strict=True)
            ]
        for (i, row, image, encoded, lm), act in zip(faces, acts, strict=True):
            w, h = image.size
            fb = np.array(
                [[lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()]],
                dtype=np.float32,
            )
            fb = np.clip(fb, 0, [w, h, w, h]).astype(np.float32)
            face_box = tuple(
                float(v) for v in np.asarray(adapter.from_pixels(fb, (w, h))).reshape(4)
            )
            out.append(
                _Pending(
                    index=i,
                    sid=ids[i],
                    image=image,
                    label=row["label"],
                    entries=_to_entries(act, adapter, (w, h)),
                    face_box=face_box,
                    encoded_image=encoded,
                )
            )
        return out

    def ask(group: list[_Pending]) -> list[TeacherReply]:
        reqs = []
        for p in group:
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
                    encoded_image=p.encoded_image,
                )
            )
        limiter.wait(len(reqs))
        try:
            replies = teacher.generate(reqs)
        except Exception as exc:  # a teacher that raises: a teacher error for each request
            err = f"{type(exc).__name__}: {exc}"
            return [TeacherReply("", {"teacher": teacher.name, "error": err}) for _ in reqs]
        if len(replies) != len(reqs):
            err = f"teacher {teacher.name} answered {len(replies)} replies for {len(reqs)} requests"
            return [TeacherReply("", {"teacher": teacher.name, "error": err}) for _ in reqs]
        return list(replies)

    batch = max(1, int(getattr(teacher, "batch_size", 1) or 1))
    batch = min(batch, cfg.chunk_size) if batch > 1 else 1
    slots = cfg.concurrency if batch == 1 else 1
    lookahead = max(2 * slots * batch, 2 * cfg.prep_workers * _PREP_CHUNK)
    max_attempts = 1 + cfg.max_format_retries + cfg.max_label_retries
    run = {"requests": 0, "teacher_errors": 0, "consecutive": 0}
    last_error = [""]

    rec_file = _RecordFile(build / _RECORDS)
    bar = tqdm(
        total=len(indices), initial=len(indices) - len(todo), desc="traces", disable=not progress
    )

    def finish(rec: dict[str, Any]) -> None:
        rec_file.write(rec)
        records[rec["id"]] = rec
        if rec["status"] in FINAL_STATUSES:
            bar.update(1)

    def judge(p: _Pending, rep: TeacherReply) -> _Pending | None:
        """Record ``p`` if this reply finishes it; else ``p`` to ask again."""
        run["requests"] += 1
        if rep.meta.get("error"):
            run["teacher_errors"] += 1
            run["consecutive"] += 1
            last_error[0] = str(rep.meta["error"])
            finish(
                {
                    "id": p.sid,
                    "index": p.index,
                    "status": "teacher_error",
                    "error": last_error[0][:500],
                }
            )
            return None
        run["consecutive"] = 0
        p.attempts += 1
        p.last_meta = dict(rep.meta)
        p.last_text = rep.text
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
            return p
        finish(_record(p, status, teacher.name, det_meta))
        return None

    results: queue.SimpleQueue = queue.SimpleQueue()
    prep_pool = _Workers(cfg.prep_workers, results, "trace-prep", init=_serial_kernels)
    ask_pool = _Workers(slots, results, "trace-teacher")
    outage = False
    try:
        pending_rows = iter(todo)
        exhausted = False
        preparing = inflight = 0
        ready: collections.deque[_Pending] = collections.deque()
        while True:
            while not exhausted and preparing + len(ready) < lookahead:
                chunk = list(itertools.islice(pending_rows, _PREP_CHUNK))
                if len(chunk) < _PREP_CHUNK:
                    exhausted = True
                if chunk:
                    prep_pool.submit("prep", prepare, chunk)
                    preparing += len(chunk)
            flush = exhausted and preparing == 0
            while inflight < slots and ready and (len(ready) >= batch or flush):
                group = [ready.popleft() for _ in range(min(batch, len(ready)))]
                ask_pool.submit("ask", ask, group)
                inflight += 1
            if not (inflight or preparing or ready) and exhausted:
                break
            tag, arg, res, exc = results.get()
            if exc is not None:
                raise exc
            if tag == "prep":
                preparing -= len(arg)
                for item in res:
                    if isinstance(item, dict):
                        finish(item)
                    else:
                        ready.append(item)
                continue
            inflight -= 1
            for p, rep in zip(arg, res, strict=True):
                again = judge(p, rep)
                if again is not None:
                    ready.appendleft(again)  # retries first: faces finish sooner
            if run["consecutive"] >= cfg.max_consecutive_teacher_errors:
                outage = True
                break
    finally:
        prep_pool.close()
        ask_pool.close()
        rec_file.close()
        bar.close()

    summary = _summarise((records.get(ids[i]) for i in indices), len(indices))
    summary.output_dir = str(out)
    summary.shard = cfg.shard
    summary.requests = run["requests"]
    summary.teacher_errors = run["teacher_errors"]
    if not outage:
        _assemble(dataset, records, [ids[i] for i in indices], out, cfg, labels, adapter)
        _save_settings(out, cfg, labels, det)
    summary.seconds = time.perf_counter() - t0
    summary_dict = {**dataclasses.asdict(summary), "detector": det_meta}
    (build / "summary.json").write_text(json.dumps(summary_dict, indent=2))
    if outage:
        raise TeacherOutageError(
            f"the teacher {teacher.name} is failing: {run['consecutive']} requests in a row "
            f"failed after their HTTP retries (last: {last_error[0][:300]}); stopped with "
            f"{summary.kept}/{summary.total} kept, {summary.teacher_error + summary.not_built} "
            f"faces to do. Nothing is lost: fix the server and rerun the same command to "
            f"resume (no --overwrite)",
            summary,
        )
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
            detector=getattr(detector, "name", None) or _detector_name(detector),
        ),
    )


def _record(
    p: _Pending, status: str, teacher_name: str, detector: dict[str, Any] | None = None
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": p.sid,
        "index": p.index,
        "status": status,
        "attempts": p.attempts,
        "format_failures": p.format_failures,
        "label_failures": p.label_failures,
        "eliminated": list(p.eliminated),
    }
    if status == "kept":
        rec.update(
            trace=p.last_text,
            size=list(p.image.size),
            teacher_prompt=p.last_user,
            teacher=teacher_name,
            teacher_meta={
                **{k: v for k, v in p.last_meta.items() if _jsonable(v)},
                **({"detector": detector} if detector else {}),
            },
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
    """Counts over the latest record of each face (``None``: no record yet)."""
    s = BuildSummary(total=total)
    for r in records:
        if r is None:
            s.not_built += 1
            continue
        st = r["status"]
        if st == "teacher_error":
            s.teacher_error += 1
            continue
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
    if all("size" in r for r in kept):  # recorded at build time: no image decoding here
        sizes = [tuple(int(v) for v in r["size"]) for r in kept]
    else:
        sizes = [tuple(im.size) for im in base.select_columns(["image"])["image"]]
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
