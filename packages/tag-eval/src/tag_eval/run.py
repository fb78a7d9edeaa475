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
     "parse": {"format_ok", "answer_ok", "reasons"},
     "pred_pairs": [{"au", "box"}],        # image pixels, xyxy
     "conclusion_aus": [...],
     "landmarks": [[x, y] * 68] | None, "landmarks_source": "dataset" | "dlib" | None,
     "au_probs": {"6": 0.9, ...}, "activated": [{"au", "prob", "box"}],
     "image_size": [w, h],
     "timing": {"batch_seconds", "batch_size", "seconds", "prompt_tokens", "new_tokens"}}
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tag_eval._records import (
    METRICS_NAME,
    RUN_META_NAME,
    SAMPLES_NAME,
    EvalInputError,
    append_records,
    check_records_label_space,
    read_jsonl,
    read_run_meta,
    write_json,
)
from tag_eval.faithfulness import grounding_from_record, score_faithfulness, summarize_faithfulness
from tag_eval.metrics import bootstrap_ci, classification_metrics

__all__ = [
    "DATASETS",
    "PROMPTS",
    "RunConfig",
    "compute_metrics",
    "load_eval_dataset",
    "plot_confusion",
    "run_eval",
]

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

    ``label_space`` applies to ``folder`` datasets (default: the eight canonical classes).
    Loader errors (missing files, malformed lines) and an empty dataset become
    :class:`EvalInputError` naming the dataset, root and split.
    """
    from tag_model import datasets as tmd
    from tag_model.au import (
        AFFECTNET7,
        AFFECTNET8,
        CANONICAL_LABELS,
        FERPLUS,
        RAFDB,
        LabelSpace,
        get_label_space,
    )

    key = name.strip().lower()
    if key not in DATASETS:
        raise EvalInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if label_space is not None and key != "folder":
        raise EvalInputError(f"--label-space applies to folder datasets only, not {key}")
    rootp = Path(root)
    if not rootp.exists():
        raise EvalInputError(f"dataset root not found: {rootp}")
    try:
        if key == "folder":
            expected = (
                get_label_space(label_space)
                if label_space
                else LabelSpace("canonical", CANONICAL_LABELS)
            )
            sub = None if split in ("", "all", None) else split
            ds = tmd.load_folder(rootp, sub, label_space=expected)
        elif key.startswith("affectnet"):
            expected = AFFECTNET7 if key == "affectnet7" else AFFECTNET8
            ds = tmd.load_affectnet(rootp, split, classes=len(expected))
        elif key == "rafdb":
            expected = RAFDB
            ds = tmd.load_rafdb(rootp, split)
        else:
            expected = FERPLUS
            ds = tmd.load_ferplus(rootp, split)
    except (OSError, ValueError, KeyError) as exc:
        raise EvalInputError(f"cannot load {key} from {rootp} (split {split!r}): {exc}") from exc
    if len(ds) == 0:
        raise EvalInputError(f"dataset {key} at {rootp} (split {split!r}) has no samples")
    names = tuple(ds.features["label_id"].names)
    space = expected if tuple(expected.names) == names else LabelSpace("custom", names)
    return ds, space


# ----------------------------------------------------------------------------- detector


class _Detector:
    """The AU detector chosen by ``--detector``.

    ``geometric``: :class:`tag_model.detectors.GeometricAUDetector` on the landmarks.
    ``openface:FILE.csv``: one OpenFace 2.0 CSV whose frame ``k`` (1-based, as
    ``FeatureExtraction`` numbers an image sequence) is dataset sample ``k - 1``.
    ``openface:DIR``: one CSV per image, ``DIR/<image stem>.csv`` (``FaceLandmarkImg
    -out_dir`` output). A sample with no CSV row gets no activated AUs.
    """

    def __init__(self, spec: str) -> None:
        from tag_model import detectors

        self.spec = spec
        self.kind = spec.split(":", 1)[0]
        self._detectors = detectors
        self._per_image: dict[str, Any] = {}
        if spec == "geometric":
            self.impl = detectors.GeometricAUDetector()
        elif self.kind == "openface" and ":" in spec:
            self.path = Path(spec.split(":", 1)[1])
            if not self.path.exists():
                raise EvalInputError(f"OpenFace CSV (or folder of CSVs) not found: {self.path}")
            self.impl = None if self.path.is_dir() else self._load(self.path)
        else:
            raise EvalInputError(
                f"unknown detector {spec!r}; use 'geometric', 'openface:FILE.csv' or 'openface:DIR'"
            )

    def _load(self, csv_path: Path) -> Any:
        try:
            return self._detectors.OpenFaceCSVDetector(csv_path)
        except (OSError, ValueError) as exc:
            raise EvalInputError(f"cannot read OpenFace CSV {csv_path}: {exc}") from exc

    def predict(
        self, image: Any, landmarks: np.ndarray | None, index: int, path: str | None
    ) -> dict[int, float]:
        if self.kind == "geometric":
            if landmarks is None:
                return {}
            return self.impl.predict(image=image, landmarks=landmarks)
        if self.impl is not None:
            return self.impl.predict(frame=index + 1)
        stem = Path(path).stem if path else f"{index:06d}"
        csv_path = self.path / f"{stem}.csv"
        if not csv_path.exists():
            return {}
        if stem not in self._per_image:
            self._per_image[stem] = self._load(csv_path)
        return self._per_image[stem].predict()


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
            "parse": {"format_ok": False, "answer_ok": False, "reasons": [f"parser error: {exc}"]},
            "pred_pairs": [],
            "conclusion_aus": conclusion_aus(text or ""),
        }
    pred_id = int(parsed.answer_id)
    reasons = [str(e) for e in parsed.errors]
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
            recs, _ = read_jsonl(out / SAMPLES_NAME)
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
    """Run (or resume) an evaluation and return its metrics (also written to the run dir)."""
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
    detector = _Detector(cfg.detector)

    samples_path = out / SAMPLES_NAME
    done, valid_bytes = read_jsonl(samples_path)
    check_records_label_space(
        done, {"label_space": {"name": space.name, "names": list(names)}}, samples_path
    )
    if samples_path.exists() and valid_bytes < samples_path.stat().st_size:
        with samples_path.open("r+b") as fh:  # drop the truncated last line
            fh.truncate(valid_bytes)
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
        return adapter.build_messages(im, names, grounded=grounded, style=style)

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
        append_records(samples_path, records)
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


# ----------------------------------------------------------------------------- metrics


def compute_metrics(
    run_dir: str | os.PathLike[str],
    *,
    tau: float = 0.3,
    face_margin: float = 0.1,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Score every record of a run; writes ``metrics.json`` and ``confusion.png``."""
    from tag_eval._records import load_run

    out = Path(run_dir)
    meta, records = load_run(out)
    names = meta["label_space"]["names"]
    if not records:
        raise EvalInputError(f"{out / SAMPLES_NAME}: no samples to score")
    y = [r["label_id"] for r in records]
    p = [r["prediction_id"] for r in records]
    cls = classification_metrics(y, p, names)
    cls["accuracy_ci"] = dict(
        bootstrap_ci([float(r["correct"]) for r in records], n_boot=n_boot, level=level, seed=seed)
    )
    scores = score_faithfulness(
        [grounding_from_record(r) for r in records], tau=tau, face_margin=face_margin
    )
    faith = summarize_faithfulness(scores, n_boot=n_boot, level=level, seed=seed)
    faith["face_margin"] = face_margin
    reasons: Counter[str] = Counter()
    for r in records:
        for reason in r["parse"]["reasons"]:
            reasons[re.sub(r"\d+", "N", str(reason))[:80]] += 1
    secs = [r["timing"]["seconds"] for r in records]
    new_tok = [r["timing"]["new_tokens"] for r in records]
    metrics = {
        "run": {k: meta.get(k) for k in ("model", "dataset", "split", "prompt", "seed", "family")},
        "label_space": meta["label_space"],
        "classification": cls,
        "faithfulness": faith,
        "parse": {
            "format_ok_rate": float(np.mean([r["parse"]["format_ok"] for r in records])),
            "answer_ok_rate": float(np.mean([r["parse"]["answer_ok"] for r in records])),
            "top_reasons": reasons.most_common(10),
            "faces_found": int(sum(r["landmarks"] is not None for r in records)),
        },
        "timing": {
            "seconds_total": float(np.sum(secs)),
            "seconds_per_sample": float(np.mean(secs)),
            "new_tokens_per_second": float(np.sum(new_tok) / max(np.sum(secs), 1e-9)),
        },
        "per_sample_faithfulness": {r["id"]: scores.per_sample(i) for i, r in enumerate(records)},
    }
    write_json(out / METRICS_NAME, metrics)
    plot_confusion(cls, out / "confusion.png", title=f"{meta.get('model')} — {meta.get('dataset')}")
    return metrics


def plot_confusion(
    cls: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = ""
) -> None:
    """Row-normalised confusion matrix with counts (plus an ``unanswered`` column) as a PNG."""
    from matplotlib.figure import Figure

    names = list(cls["labels"])
    cm = np.asarray(cls["confusion"], dtype=np.float64)
    un = np.asarray(cls["unanswered"], dtype=np.float64)[:, None]
    full = np.concatenate([cm, un], axis=1)
    rows = full.sum(1, keepdims=True)
    norm = np.divide(full, rows, out=np.zeros_like(full), where=rows > 0)
    c = len(names)
    fig = Figure(figsize=(1.0 + 0.8 * (c + 1), 1.0 + 0.7 * c), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(c + 1), [*names, "unanswered"], rotation=45, ha="right")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = cls.get("accuracy")
    ax.set_title(
        f"{title}\naccuracy {acc:.3f}" if acc is not None and math.isfinite(acc) else title,
        fontsize=9,
    )
    for i in range(c):
        for j in range(c + 1):
            if full[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(full[i, j])),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
