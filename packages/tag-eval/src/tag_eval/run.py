"""``tag-eval run``: generate, parse and score a model on a FER dataset.

One run directory per (model, dataset, split, prompt, seed) holds ``run.json`` (settings and
the label space), ``samples.jsonl`` (one record per sample, appended batch by batch),
``metrics.json`` and ``confusion.png``. A run interrupted at any point resumes where it
stopped: finished samples are skipped (a truncated last line is dropped and regenerated), and
batches are formed over the whole ordered dataset, so a resumed run generates exactly the
batches an uninterrupted one would (greedy decoding gives the same traces).

Each record::

    {"id", "index", "path", "image_file", "label", "label_id", "label_space",
     "prediction", "prediction_id", "correct", "trace",
     "parse": {"format_ok", "well_formed", "answer_ok", "reasons"},
     "pred_pairs": [{"au", "box"}],        # image pixels, xyxy
     "conclusion_aus": [...],
     "landmarks": [[x, y] * 68] | None, "landmarks_source": "dataset" | "dlib" | None,
     "au_probs": {"6": 0.9, ...}, "activated": [{"au", "prob", "box"}],
     "image_size": [w, h],
     "timing": {"batch_seconds", "batch_size", "seconds", "prompt_tokens", "new_tokens"}}
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tag_model.backbones import build_messages
from tag_model.jsonl import append_jsonl

from tag_eval._detectors import Detector, detector_mismatch
from tag_eval._records import (
    RUN_META_NAME,
    SAMPLES_NAME,
    EvalDatasetError,
    EvalInputError,
    EvalModelError,
    check_records_label_space,
    read_records,
    read_run_meta,
    write_json,
)
from tag_eval.metrics import compute_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "ENGINES",
    "PROMPTS",
    "RunConfig",
    "load_eval_dataset",
    "normalize_prompt",
    "run_eval",
]

#: ``full``: TAG's AU-grounded instruction (``tag-train traces --prompt_style full``; older
#: runs call it ``grounded``); ``compact``: the same request in one line (for students
#: fine-tuned with ``--prompt_style compact``); ``zeroshot``: the label-only baseline.
PROMPTS: tuple[str, ...] = ("full", "compact", "zeroshot")
DATASETS: tuple[str, ...] = ("rafdb", "ferplus", "affectnet", "affectnet7", "affectnet8", "folder")
ENGINES: tuple[str, ...] = ("transformers", "vllm", "openai")

#: run.json key -> RunConfig field, for the settings that must match to resume a run.
_RESUME_KEYS = {
    "model": "model_name_or_path",
    "dataset": "dataset",
    "split": "split",
    "prompt": "prompt_style",
    "seed": "seed",
    "max_new_tokens": "max_new_tokens",
    "detector": "detector",
    "engine": "engine",
    "family": "family",
    "top_k": "top_k",
    "threshold": "threshold",
}


def normalize_prompt(style: str | None) -> str | None:
    """``grounded`` (the name older runs use) is ``full``; other names pass unchanged."""
    return "full" if style == "grounded" else style


def _help(text: str, **kw: Any) -> dict[str, Any]:
    return {"help": text, **kw}


@dataclass
class RunConfig:
    """Settings of one evaluation run; the fields are the flags of ``tag-eval run``.

    Names follow ``tag-train`` (``--data_root``, ``--prompt_style``, ``--output_dir``,
    ``--per_device_eval_batch_size``, ``--label_space``...); a YAML file given with
    ``--config`` uses the same keys.
    """

    model_name_or_path: str = field(
        metadata=_help(
            "Checkpoint folder or hub id (transformers, vllm); with --engine openai, the "
            "served model name.",
            aliases=["--model"],
        )
    )
    dataset: str = field(metadata=_help("Dataset reader.", choices=list(DATASETS)))
    data_root: str = field(metadata=_help("Dataset root directory.", aliases=["--root"]))
    split: str = field(default="test", metadata=_help("Dataset split ('' or all: a whole folder)."))
    output_dir: str | None = field(
        default=None,
        metadata=_help(
            "Run directory (default: runs/<model>-<dataset>-<split>-<prompt>-s<seed>).",
            aliases=["--out"],
        ),
    )
    prompt_style: str | None = field(
        default=None,
        metadata=_help(
            "full: TAG's AU-grounded prompt; compact: its one-line form (students trained with "
            "tag-train traces --prompt_style compact); zeroshot: the label-only baseline. "
            "Default: the checkpoint's tag_settings.json, else full.",
            choices=list(PROMPTS),
            aliases=["--prompt"],
        ),
    )
    per_device_eval_batch_size: int = field(
        default=8,
        metadata=_help("Images per generation batch.", aliases=["--batch_size", "--batch-size"]),
    )
    max_new_tokens: int = field(default=512, metadata=_help("Max new tokens per completion."))
    seed: int = field(default=0, metadata=_help("Seed (greedy decoding; bootstrap)."))
    limit: int | None = field(default=None, metadata=_help("Evaluate only the first N samples."))
    detector: str = field(
        default="geometric",
        metadata=_help(
            "AU detector: 'geometric' (on landmarks), 'openface:FILE.csv' (frame k is sample "
            "k-1), 'openface:DIR' (one CSV per image, named by its stem), 'pyfeat' or "
            "'module:Class' (the same specs as `tag-train traces --detector`)."
        ),
    )
    engine: str = field(
        default="transformers",
        metadata=_help(
            "transformers (local), vllm (local, pip install vllm) or openai (any "
            "OpenAI-compatible endpoint: --base_url, --model).",
            choices=list(ENGINES),
        ),
    )
    family: str | None = field(
        default=None,
        metadata=_help(
            "Backbone family (default: from the checkpoint's config; openai: the box "
            "convention the prompt states, default qwen2_vl's 0-1000)."
        ),
    )
    label_space: str | None = field(
        default=None,
        metadata=_help(
            "Label space: a name (rafdb, ferplus, affectnet7, affectnet8) or labels separated "
            "by commas; rows outside it are dropped and counted. Default: the labels the "
            "checkpoint was trained with (its tag_settings.json), else the dataset's own (a "
            "folder: the eight canonical classes)."
        ),
    )
    device: str | None = field(
        default=None, metadata=_help("Torch device (default: cuda if available, else cpu).")
    )
    top_k: int = field(default=6, metadata=_help("Activated-list size."))
    threshold: float = field(default=0.5, metadata=_help("AU activation threshold."))
    tau: float = field(default=0.3, metadata=_help("IoU below which a box misses its AU's region."))
    face_margin: float = field(
        default=0.1,
        metadata=_help("Face box = landmark box grown by this fraction of the face size."),
    )
    n_boot: int = field(default=2000, metadata=_help("Bootstrap resamples."))
    skip_missing: bool = field(
        default=False,
        metadata=_help(
            "Skip dataset rows whose image is missing or corrupt (counted in run.json)."
        ),
    )
    progress: bool = field(
        default=True, metadata=_help("Show a progress bar (--no_progress: off).")
    )
    base_url: str | None = field(
        default=None,
        metadata=_help("openai: the OpenAI-compatible API root, e.g. http://localhost:8000/v1."),
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata=_help(
            "openai: NAME of the environment variable holding the API key (never logged)."
        ),
    )
    concurrency: int = field(
        default=8,
        metadata=_help(
            "openai: requests in flight, within one batch of --per_device_eval_batch_size "
            "images (raise both together)."
        ),
    )
    timeout: float = field(default=120.0, metadata=_help("openai: seconds per request."))
    max_http_retries: int = field(
        default=5, metadata=_help("openai: retries on 429/5xx/timeouts (exponential backoff).")
    )
    tensor_parallel_size: int = field(default=1, metadata=_help("vllm: GPUs per model."))
    gpu_memory_utilization: float = field(
        default=0.9, metadata=_help("vllm: fraction of GPU memory vLLM may use.")
    )
    max_model_len: int | None = field(
        default=None, metadata=_help("vllm: context length (default: the model's).")
    )

    def __post_init__(self) -> None:
        self.prompt_style = normalize_prompt(self.prompt_style)

    @property
    def prompt(self) -> str:
        """The prompt style in use (``full`` until resolved otherwise)."""
        return self.prompt_style or "full"

    def out_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        ref = self.model_name_or_path
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(ref).name or ref)
        return Path("runs") / f"{stem}-{self.dataset}-{self.split}-{self.prompt}-s{self.seed}"


# ----------------------------------------------------------------------------- dataset


def load_eval_dataset(
    name: str,
    root: str | os.PathLike[str],
    split: str,
    *,
    label_space: str | Sequence[str] | None = None,
    skip_missing: bool = False,
    return_report: bool = False,
) -> tuple[Any, ...]:
    """``(datasets.Dataset, LabelSpace)`` for ``--dataset``/``--data_root``/``--split``.

    Reads through :func:`tag_model.datasets.load_fer_dataset`; ``affectnet`` is AffectNet-8.
    ``label_space`` (a name, or a list of labels) works for every dataset: rows whose label is
    outside it are dropped and counted in the report (``not_in_label_space:<label>``) and
    ``label_id`` follows its order; a folder defaults to the eight canonical classes. For
    a folder, ``split`` ``""`` or ``"all"`` reads the whole folder. Rows whose image is
    missing or corrupt fail the load unless ``skip_missing``, which skips them (the reader's
    :class:`~tag_model.datasets.LoadReport` lists them; ``return_report`` adds it as a third
    item). Loader errors (missing files, malformed lines, missing images), a missing split and
    an empty dataset become :class:`EvalDatasetError` naming the dataset, root and split.
    """
    from tag_model.au import (
        AFFECTNET7,
        AFFECTNET8,
        CANONICAL_LABELS,
        FERPLUS,
        RAFDB,
        LabelSpace,
        get_label_space,
    )
    from tag_model.datasets import DatasetImageError, load_fer_dataset

    key = name.strip().lower()
    if key not in DATASETS:
        raise EvalInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    rootp = Path(root)
    if not rootp.exists():
        raise EvalDatasetError(f"dataset root not found: {rootp}")
    subset: LabelSpace | None = None  # --label_space: any named space or an explicit list
    if isinstance(label_space, str) and "," in label_space:  # "happiness,sadness,..."
        label_space = [x.strip() for x in label_space.split(",") if x.strip()]
    if isinstance(label_space, (tuple, list)):  # an explicit label list (a checkpoint's)
        subset = LabelSpace("checkpoint", tuple(label_space))
    elif label_space:
        try:
            subset = get_label_space(label_space)
        except (KeyError, ValueError) as exc:
            raise EvalInputError(f"unknown --label_space {label_space!r}: {exc}") from exc
    kwargs: dict[str, Any] = {}
    if key == "folder":
        expected = subset or LabelSpace("canonical", CANONICAL_LABELS)
        kwargs["label_space"] = expected
        split_arg = None if split in ("", "all", None) else split
    else:
        if not split:
            raise EvalDatasetError(f"cannot load {key} from {rootp}: no split given")
        expected = {
            "rafdb": RAFDB,
            "ferplus": FERPLUS,
            "affectnet": AFFECTNET8,
            "affectnet7": AFFECTNET7,
            "affectnet8": AFFECTNET8,
        }[key]
        if key.startswith("affectnet"):
            kwargs["classes"] = len(expected)
        if subset is not None:  # rows outside it are dropped and counted by the reader
            expected = subset
            kwargs["label_space"] = subset
        split_arg = split
    try:
        ds, report = load_fer_dataset(
            key, rootp, split_arg, skip_missing=skip_missing, return_report=True, **kwargs
        )
    except DatasetImageError as exc:
        raise EvalDatasetError(f"{exc} (tag-eval run: --skip_missing skips them)") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise EvalDatasetError(f"cannot load {key} from {rootp} (split {split!r}): {exc}") from exc
    if len(ds) == 0:
        skipped = f" ({report.skipped} skipped for missing images)" if report.skipped else ""
        raise EvalDatasetError(
            f"dataset {key} at {rootp} (split {split!r}) has no samples{skipped}"
        )
    names = tuple(ds.features["label_id"].names)
    space = expected if tuple(expected.names) == names else LabelSpace("custom", names)
    return (ds, space, report) if return_report else (ds, space)


# ----------------------------------------------------------------------------- parsing


def _parse(text: str, names: Sequence[str], adapter: Any, size: tuple[int, int]) -> dict[str, Any]:
    """Parse one completion into the record's prediction / parse / pairs fields. Never raises."""
    from tag_model.grounding import parse_trace

    from tag_eval.faithfulness import conclusion_aus

    try:
        parsed = parse_trace(text, labels=list(names))
    except Exception as exc:  # bad model output must never crash a run
        return {
            "prediction": None,
            "prediction_id": -1,
            "parse": {
                "format_ok": False,
                "well_formed": False,
                "answer_ok": False,
                "reasons": [f"parser error: {exc}"],
            },
            "pred_pairs": [],
            "conclusion_aus": conclusion_aus(text or ""),
        }
    from tag_model.grounding import ParseReason

    pred_id = int(parsed.answer_id)
    reasons = [str(e) for e in parsed.errors]
    # A complete trace whose only complaint is that it boxes nothing is well formed.
    wf = all(e.code == ParseReason.NO_BOXED_STEP for e in parsed.errors)
    pairs = parsed.pairs()
    pixels = (
        np.asarray(
            adapter.to_pixels(np.asarray([b for _, b in pairs], np.float64), size), np.float64
        )
        if pairs
        else np.zeros((0, 4))
    )
    ok = np.isfinite(pixels).all(axis=1)
    pred_pairs = [
        {"au": int(a), "box": [round(float(v), 2) for v in b]}
        for (a, _), b, k in zip(pairs, pixels, ok)
        if k
    ]
    if not ok.all():
        reasons.append(f"{int((~ok).sum())} non-finite box(es) dropped")
    return {
        "prediction": names[pred_id] if 0 <= pred_id < len(names) else None,
        "prediction_id": pred_id if 0 <= pred_id < len(names) else -1,
        "parse": {
            "format_ok": bool(parsed.format_ok),
            "well_formed": bool(wf),
            "answer_ok": 0 <= pred_id < len(names),
            "reasons": reasons,
        },
        "pred_pairs": pred_pairs,
        "conclusion_aus": [int(a) for a in parsed.conclusion_aus],
    }


# ----------------------------------------------------------------------------- run


#: Fields written to run.json under another name (the names reports and older runs read).
_META_NAMES = {
    "model_name_or_path": "model",
    "prompt_style": "prompt",
    "data_root": "root",
    "per_device_eval_batch_size": "batch_size",
}
#: Fields not written to run.json (where the output goes, the device, display switches).
_META_SKIP = ("output_dir", "device", "progress")


def _meta(cfg: RunConfig, space: Any, n_total: int, generator: Any) -> dict[str, Any]:
    import tag_eval

    d = asdict(cfg)
    d["prompt_style"] = cfg.prompt
    meta = {_META_NAMES.get(k, k): v for k, v in d.items() if k not in _META_SKIP}
    if cfg.engine != "openai":
        for k in ("base_url", "api_key_env", "concurrency", "timeout", "max_http_retries"):
            meta.pop(k, None)
    if cfg.engine != "vllm":
        for k in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len"):
            meta.pop(k, None)
    return {
        **meta,
        "family": getattr(generator, "family", cfg.family),
        "root": str(Path(cfg.data_root).resolve()),
        "label_space": {"name": space.name, "names": list(space.names)},
        "n_dataset": n_total,
        "tag_eval_version": tag_eval.__version__,
    }


def _check_resume(out: Path, cfg: RunConfig, space: Any) -> dict[str, Any] | None:
    if not (out / RUN_META_NAME).exists():
        if (out / SAMPLES_NAME).exists():
            recs, _ = read_records(out / SAMPLES_NAME)
            fake = {"label_space": {"name": space.name, "names": list(space.names)}}
            check_records_label_space(recs, fake, out / SAMPLES_NAME)
        return None
    meta = read_run_meta(out)
    old_space = meta["label_space"]
    if list(old_space.get("names", [])) != list(space.names):
        raise EvalInputError(
            f"{out / RUN_META_NAME}: this directory holds a run on label space "
            f"{old_space.get('name')!r} ({', '.join(old_space.get('names', []))}), but "
            f"{cfg.dataset} uses {space.name!r} ({', '.join(space.names)}); "
            "use another --output_dir"
        )
    d = asdict(cfg)
    d["prompt_style"] = cfg.prompt
    for key, name in _RESUME_KEYS.items():
        if name == "family" and cfg.family is None:
            continue
        if key not in meta:
            continue
        old = normalize_prompt(meta[key]) if key == "prompt" else meta[key]
        if old != d[name]:
            raise EvalInputError(
                f"{out / RUN_META_NAME}: cannot resume, {key} was {old!r} and is now "
                f"{d[name]!r}; use the same settings or another --output_dir"
            )
    return meta


def _checkpoint_defaults(cfg: RunConfig) -> tuple[RunConfig, dict[str, Any] | None]:
    """Fill what was not given from the checkpoint's ``tag_settings.json``
    (:func:`tag_model.backbones.load_tag_settings`): ``prompt_style``, and a folder dataset's
    ``label_space``. Returns the (possibly) updated config and the settings read as a dict
    (``None``: the model is no local folder, or it has no settings file).
    """
    import dataclasses

    from tag_eval._generate import model_folder

    folder = model_folder(cfg.model_name_or_path) if cfg.engine != "openai" else None
    if folder is None or not folder.is_dir():
        return cfg, None
    try:
        from tag_model.backbones import load_tag_settings
    except ImportError:  # an older tag-model without checkpoint settings
        return cfg, None
    try:
        settings = load_tag_settings(folder)
    except ValueError as exc:  # names the file and the field
        raise EvalModelError(f"bad checkpoint settings: {exc}") from exc
    if settings is None:
        return cfg, None
    found = settings.to_dict() if hasattr(settings, "to_dict") else dataclasses.asdict(settings)
    changes: dict[str, Any] = {}
    style = found.get("prompt_style")
    if cfg.prompt_style is None and style in PROMPTS:
        changes["prompt_style"] = style
    if cfg.label_space is None and (found.get("label_space") or found.get("labels")):
        # the labels the checkpoint was trained with, on any dataset
        changes["label_space"] = found.get("label_space") or list(found["labels"])
    return (dataclasses.replace(cfg, **changes) if changes else cfg), found


def _record_id(path: Any, index: int, seen: set[str]) -> str:
    rid = str(path) if path else f"{index:06d}"
    if rid in seen:
        rid = f"{rid}#{index}"
    seen.add(rid)
    return rid


def run_eval(cfg: RunConfig, *, generator: Any = None, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) an evaluation and return its metrics (also written to the run dir,
    by :func:`tag_eval.metrics.compute_metrics`)."""
    import torch
    from tag_model.activation import build_activated_list
    from tag_model.faces import dlib_landmarks

    from tag_eval._generate import check_model_ref, generator_from_config

    if cfg.prompt not in PROMPTS:
        raise EvalInputError(
            f"unknown --prompt_style {cfg.prompt!r}; use one of {', '.join(PROMPTS)}"
        )
    bs = cfg.per_device_eval_batch_size
    if bs < 1:
        raise EvalInputError(f"--per_device_eval_batch_size must be >= 1, got {bs}")
    if cfg.limit is not None and cfg.limit < 1:
        raise EvalInputError(f"--limit must be >= 1, got {cfg.limit}")
    if cfg.engine not in ENGINES:
        raise EvalInputError(f"unknown --engine {cfg.engine!r}; use one of {', '.join(ENGINES)}")
    if generator is None:
        if cfg.engine == "openai":
            if not cfg.base_url:
                raise EvalInputError("--engine openai needs --base_url (the API root)")
        else:  # fail fast, before loading a dataset
            check_model_ref(cfg.model_name_or_path, engine=cfg.engine)
    cfg, settings = _checkpoint_defaults(cfg)
    ds, space, report = load_eval_dataset(
        cfg.dataset,
        cfg.data_root,
        cfg.split,
        label_space=cfg.label_space,
        skip_missing=cfg.skip_missing,
        return_report=True,
    )
    if report.skipped:
        logger.warning(
            "tag-eval run: skipped %d row(s) with missing or corrupt images (--skip_missing), "
            "e.g. %s",
            report.skipped,
            ", ".join((report.missing_images + report.corrupt_images)[:3]),
        )
    names = tuple(space.names)
    if settings and settings.get("labels") and tuple(settings["labels"]) != names:
        logger.warning(
            "tag-eval run: %s was trained on the labels %s, but %s asks for %s",
            cfg.model_name_or_path,
            ", ".join(settings["labels"]),
            cfg.dataset,
            ", ".join(names),
        )
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    previous = _check_resume(out, cfg, space)
    detector = Detector(cfg.detector)
    mismatch = detector_mismatch((settings or {}).get("detector"), detector)
    if mismatch:
        logger.warning("tag-eval run: %s: %s", cfg.model_name_or_path, mismatch)

    samples_path = out / SAMPLES_NAME
    done, _ = read_records(samples_path, repair=True)  # a torn last line is cut off
    check_records_label_space(
        done, {"label_space": {"name": space.name, "names": list(names)}}, samples_path
    )
    done_ids = {r["id"] for r in done}

    n = len(ds) if cfg.limit is None else min(cfg.limit, len(ds))
    seen: set[str] = set()
    paths = ds["path"] if "path" in ds.column_names else [None] * len(ds)
    ids = [_record_id(paths[i], i, seen) for i in range(n)]
    batches = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
    todo = [b for b in batches if any(ids[i] not in done_ids for i in b)]

    owned = todo and generator is None
    if owned:
        generator = generator_from_config(cfg)
    meta = _meta(cfg, space, len(ds), generator)
    meta["skipped_images"] = {
        "missing": list(report.missing_images),
        "corrupt": list(report.corrupt_images),
    }
    if settings is not None:
        meta["checkpoint_settings"] = settings
    if generator is None and previous is not None and previous.get("family"):
        meta["family"] = previous["family"]
    write_json(out / RUN_META_NAME, meta)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    root = Path(cfg.data_root)
    iterator: Any = todo
    if progress and todo:
        from tqdm import tqdm

        iterator = tqdm(todo, desc=f"tag-eval {cfg.dataset}/{cfg.split}", unit="batch")
    grounded = cfg.prompt != "zeroshot"
    style = "compact" if cfg.prompt == "compact" else "full"
    adapter = generator.adapter if generator is not None else None

    def messages(im: Any) -> list[dict[str, Any]]:
        return build_messages(im, names, grounded=grounded, family=adapter, style=style)

    try:
        for batch in iterator:
            rows = [ds[i] for i in batch]
            images = [r["image"].convert("RGB") for r in rows]
            gens = generator.generate(images, messages)
            records = []
            for i, row, image, gen in zip(batch, rows, images, gens):
                if ids[i] in done_ids:
                    continue
                size = (int(image.width), int(image.height))
                lm_src = None
                lm = row.get("landmarks")
                if lm is not None:
                    lm = np.asarray(lm, np.float32)
                    lm_src = "dataset"
                else:
                    lm = dlib_landmarks(image)
                    lm_src = "dlib" if lm is not None else None
                probs = detector.predict(image, lm, i, row.get("path"))
                activated = (
                    build_activated_list(lm, size, probs, top_k=cfg.top_k, threshold=cfg.threshold)
                    if lm is not None
                    else []
                )
                rec: dict[str, Any] = {
                    "id": ids[i],
                    "index": i,
                    "path": row.get("path"),
                    "image_file": _image_file(root, row.get("path"), image, out, ids[i]),
                    "label": row["label"],
                    "label_id": int(row["label_id"]),
                    "label_space": space.name,
                    "trace": gen.text,
                }
                rec.update(_parse(gen.text, names, generator.adapter, size))
                rec["correct"] = rec["prediction_id"] == rec["label_id"]
                rec.update(
                    landmarks=None if lm is None else np.round(lm.astype(np.float64), 2).tolist(),
                    landmarks_source=lm_src,
                    au_probs={str(k): round(float(v), 4) for k, v in sorted(probs.items())},
                    activated=[
                        {
                            "au": int(a.au),
                            "prob": round(float(a.prob), 4),
                            "box": [round(float(v), 2) for v in a.box],
                        }
                        for a in activated
                    ],
                    image_size=list(size),
                    timing={
                        "batch_seconds": round(gen.batch_seconds, 4),
                        "batch_size": gen.batch_size,
                        "seconds": round(gen.batch_seconds / max(gen.batch_size, 1), 4),
                        "prompt_tokens": gen.prompt_tokens,
                        "new_tokens": gen.new_tokens,
                    },
                )
                records.append(rec)
            append_jsonl(samples_path, records)
            done_ids.update(r["id"] for r in records)
    finally:
        if owned and hasattr(generator, "close"):
            generator.close()

    return compute_metrics(
        out, tau=cfg.tau, face_margin=cfg.face_margin, n_boot=cfg.n_boot, seed=cfg.seed
    )


def _image_file(root: Path, path: Any, image: Any, out: Path, rid: str) -> str:
    if path:
        p = Path(path)
        full = p if p.is_absolute() else root / p
        if full.exists():
            return str(full.resolve())
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rid)[-80:]
    dest = out / "images" / f"{safe}.png"
    dest.parent.mkdir(exist_ok=True)
    if not dest.exists():
        image.save(dest)
    return str(dest.relative_to(out))
