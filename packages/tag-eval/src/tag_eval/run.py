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

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tag_model.backbones import build_messages
from tag_model.jsonl import append_jsonl

from tag_eval._detectors import Detector
from tag_eval._records import (
    RUN_META_NAME,
    SAMPLES_NAME,
    EvalInputError,
    check_records_label_space,
    read_records,
    read_run_meta,
    write_json,
)
from tag_eval.metrics import compute_metrics

__all__ = ["DATASETS", "PROMPTS", "RunConfig", "load_eval_dataset", "run_eval"]

#: ``grounded``: TAG's full AU-grounded instruction; ``compact``: the same request in one line
#: (for students fine-tuned with ``tag-train traces --prompt_style compact``); ``zeroshot``:
#: the label-only baseline.
PROMPTS: tuple[str, ...] = ("grounded", "compact", "zeroshot")
DATASETS: tuple[str, ...] = ("rafdb", "ferplus", "affectnet", "affectnet7", "affectnet8", "folder")

#: Settings that must match for a run directory to be resumed.
_RESUME_KEYS = (
    "model",
    "dataset",
    "split",
    "prompt",
    "seed",
    "max_new_tokens",
    "detector",
    "engine",
    "family",
    "top_k",
    "threshold",
)


@dataclass
class RunConfig:
    """Settings of one evaluation run (the CLI flags of ``tag-eval run``)."""

    model: str
    dataset: str
    root: str
    split: str = "test"
    out: str | None = None
    prompt: str = "grounded"
    batch_size: int = 8
    max_new_tokens: int = 512
    seed: int = 0
    limit: int | None = None
    detector: str = "geometric"
    engine: str = "transformers"
    family: str | None = None
    label_space: str | None = None
    device: str | None = None
    top_k: int = 6
    threshold: float = 0.5
    tau: float = 0.3
    face_margin: float = 0.1
    n_boot: int = 2000
    extra: dict[str, Any] = field(default_factory=dict)

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.model).name or self.model)
        return Path("runs") / f"{stem}-{self.dataset}-{self.split}-{self.prompt}-s{self.seed}"


# ----------------------------------------------------------------------------- dataset


def load_eval_dataset(
    name: str, root: str | os.PathLike[str], split: str, *, label_space: str | None = None
) -> tuple[Any, Any]:
    """``(datasets.Dataset, LabelSpace)`` for ``--dataset``/``--root``/``--split``.

    Reads through :func:`tag_model.datasets.load_fer_dataset`; ``affectnet`` is AffectNet-8.
    ``label_space`` applies to ``folder`` datasets (default: the eight canonical classes); for
    a folder, ``split`` ``""`` or ``"all"`` reads the whole folder. Loader errors (missing
    files, malformed lines), a missing split and an empty dataset become
    :class:`EvalInputError` naming the dataset, root and split.
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
    from tag_model.datasets import load_fer_dataset

    key = name.strip().lower()
    if key not in DATASETS:
        raise EvalInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if label_space is not None and key != "folder":
        raise EvalInputError(f"--label-space applies to folder datasets only, not {key}")
    rootp = Path(root)
    if not rootp.exists():
        raise EvalInputError(f"dataset root not found: {rootp}")
    kwargs: dict[str, Any] = {}
    if key == "folder":
        expected = (
            get_label_space(label_space)
            if label_space
            else LabelSpace("canonical", CANONICAL_LABELS)
        )
        kwargs["label_space"] = expected
        split_arg = None if split in ("", "all", None) else split
    else:
        if not split:
            raise EvalInputError(f"cannot load {key} from {rootp}: no split given")
        expected = {
            "rafdb": RAFDB,
            "ferplus": FERPLUS,
            "affectnet": AFFECTNET8,
            "affectnet7": AFFECTNET7,
            "affectnet8": AFFECTNET8,
        }[key]
        if key.startswith("affectnet"):
            kwargs["classes"] = len(expected)
        split_arg = split
    try:
        ds = load_fer_dataset(key, rootp, split_arg, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise EvalInputError(f"cannot load {key} from {rootp} (split {split!r}): {exc}") from exc
    if len(ds) == 0:
        raise EvalInputError(f"dataset {key} at {rootp} (split {split!r}) has no samples")
    names = tuple(ds.features["label_id"].names)
    space = expected if tuple(expected.names) == names else LabelSpace("custom", names)
    return ds, space


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


def _meta(cfg: RunConfig, space: Any, n_total: int, generator: Any) -> dict[str, Any]:
    import tag_eval

    d = asdict(cfg)
    d.pop("extra", None)
    return {
        **{k: d[k] for k in d if k not in ("out", "device")},
        "family": getattr(generator, "family", cfg.family),
        "root": str(Path(cfg.root).resolve()),
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
            f"{cfg.dataset} uses {space.name!r} ({', '.join(space.names)}); use another --out"
        )
    d = asdict(cfg)
    for k in _RESUME_KEYS:
        if k == "family" and cfg.family is None:
            continue
        if k in meta and meta[k] != d[k]:
            raise EvalInputError(
                f"{out / RUN_META_NAME}: cannot resume, {k} was {meta[k]!r} and is now "
                f"{d[k]!r}; use the same settings or another --out"
            )
    return meta


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

    from tag_eval._generate import check_model_ref, load_generator

    if cfg.prompt not in PROMPTS:
        raise EvalInputError(f"unknown prompt {cfg.prompt!r}; use one of {', '.join(PROMPTS)}")
    if cfg.batch_size < 1:
        raise EvalInputError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.limit is not None and cfg.limit < 1:
        raise EvalInputError(f"--limit must be >= 1, got {cfg.limit}")
    if generator is None:
        check_model_ref(cfg.model)  # fail fast, before loading a dataset
    ds, space = load_eval_dataset(cfg.dataset, cfg.root, cfg.split, label_space=cfg.label_space)
    names = tuple(space.names)
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    previous = _check_resume(out, cfg, space)
    detector = Detector(cfg.detector)

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
    batches = [list(range(s, min(s + cfg.batch_size, n))) for s in range(0, n, cfg.batch_size)]
    todo = [b for b in batches if any(ids[i] not in done_ids for i in b)]

    if todo and generator is None:
        generator = load_generator(
            cfg.model,
            engine=cfg.engine,
            family=cfg.family,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed,
            device=cfg.device,
        )
    meta = _meta(cfg, space, len(ds), generator)
    if generator is None and previous is not None and previous.get("family"):
        meta["family"] = previous["family"]
    write_json(out / RUN_META_NAME, meta)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    root = Path(cfg.root)
    iterator: Any = todo
    if progress and todo:
        from tqdm import tqdm

        iterator = tqdm(todo, desc=f"tag-eval {cfg.dataset}/{cfg.split}", unit="batch")
    grounded = cfg.prompt != "zeroshot"
    style = "compact" if cfg.prompt == "compact" else "full"
    adapter = generator.adapter if generator is not None else None

    def messages(im: Any) -> list[dict[str, Any]]:
        return build_messages(im, names, grounded=grounded, family=adapter, style=style)

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
