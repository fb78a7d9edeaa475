"""``tag-train export``: a trace dataset as verl, EasyR1 or OpenRLHF GRPO training data.

Every format carries the same :class:`tag_train.integrations.GroundTruth` JSON string (label,
activated list in image pixels, image size, backbone family, pixel budget, label set), which
the matching adapter in :mod:`tag_train.integrations` reads:

* ``verl``: ``OUT/train.parquet`` with ``data_source``, ``prompt`` (chat messages, the image as
  an ``<image>`` placeholder in the user turn), ``images`` (a list of images), ``ability``,
  ``reward_model: {style: "rule", ground_truth}`` and ``extra_info`` (verl's ``RLHFDataset``
  layout, as its geo3k example writes it);
* ``easyr1``: ``OUT/train.parquet`` with ``problem`` (the prompt text, ``<image>`` first),
  ``answer`` (the ground truth) and ``images`` (EasyR1's ``prompt_key`` / ``answer_key`` /
  ``image_key`` defaults of its VLM examples: ``problem``, ``answer``, ``images``);
* ``openrlhf``: ``OUT/train.jsonl`` with ``prompt`` (chat messages, ``<image>`` in the user
  turn), ``images`` (paths of PNG files written to ``OUT/images/``), ``label`` (the ground
  truth) and ``datasource`` (``--data.input_key prompt --data.label_key label
  --data.image_key images --data.apply_chat_template``).

``--val_size N`` holds the last N rows out as ``val.parquet`` / ``val.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tag_train.integrations import GroundTruth

__all__ = ["FORMATS", "ExportArguments", "ExportSummary", "export_dataset", "placeholder_messages"]

FORMATS = ("verl", "easyr1", "openrlhf")
IMAGE_PLACEHOLDER = "<image>"


@dataclass
class ExportArguments:
    """``tag-train export`` options."""

    format: str = field(metadata={"help": f"target framework: {', '.join(FORMATS)}"})
    dataset_path: str = field(metadata={"help": "a trace dataset from `tag-train traces`"})
    output_dir: str = field(metadata={"help": "folder for the exported files"})
    family: str | None = field(
        default=None,
        metadata={"help": "backbone family; unset: the one in the dataset's tag_settings.json"},
    )
    min_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Qwen2.5-VL processor min_pixels of the rollouts; unset: the released one"
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Qwen2.5-VL processor max_pixels of the rollouts; unset: the released one"
        },
    )
    data_source: str = field(default="tag/fer", metadata={"help": "verl's data_source value"})
    val_size: int = field(default=0, metadata={"help": "hold the last N rows out as val.*"})


@dataclass
class ExportSummary:
    """What was written."""

    format: str
    files: list[str]
    rows: dict[str, int]
    family: str

    def as_text(self) -> str:
        parts = ", ".join(f"{k} {v} rows" for k, v in self.rows.items())
        return f"tag-train export ({self.format}, {self.family}): {parts} -> " + ", ".join(
            self.files
        )


def placeholder_messages(messages: Any) -> list[dict[str, str]]:
    """Chat messages with string contents and the image as an ``<image>`` placeholder.

    A content list keeps its order (image parts become ``<image>``, text parts their text);
    when no message holds an image, ``<image>`` opens the first user turn (TAG's prompts are
    one image then the instruction).
    """
    out: list[dict[str, str]] = []
    seen_image = False
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            text = ""
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("image", "image_url") or (isinstance(part, dict) and "image" in part):
                    text += IMAGE_PLACEHOLDER
                    seen_image = True
                elif isinstance(part, dict) and isinstance(part.get("text"), str):
                    text += part["text"]
                elif isinstance(part, str):
                    text += part
        else:
            text = "" if content is None else str(content)
            seen_image = seen_image or IMAGE_PLACEHOLDER in text
        out.append({"role": str(m.get("role", "user")), "content": text})
    if not seen_image:
        for m in out:
            if m["role"] == "user":
                m["content"] = IMAGE_PLACEHOLDER + m["content"]
                break
        else:
            raise ValueError("the prompt has no user message to hold the image")
    return out


def _prompt_text(messages: list[dict[str, str]]) -> str:
    """One string for EasyR1's ``problem``: the user turn(s), the system turn before them."""
    return "\n".join(m["content"] for m in messages if m["role"] in ("system", "user"))


def _load(dataset_path: str) -> Any:
    from datasets import load_from_disk

    p = Path(dataset_path)
    if not p.exists():
        raise FileNotFoundError(f"--dataset_path {dataset_path}: no such folder")
    ds = load_from_disk(str(p))
    need = ("image", "label", "activated", "prompt")
    missing = [c for c in need if c not in ds.column_names]
    if missing:
        from tag_model.datasets import DatasetFormatError

        raise DatasetFormatError(
            f"{dataset_path}: the trace dataset lacks columns {missing} "
            f"(columns: {ds.column_names}); build it with `tag-train traces`"
        )
    return ds


def _settings(dataset_path: str, family: str | None) -> tuple[str, tuple[str, ...] | None]:
    from tag_model.backbones import load_tag_settings, resolve_family

    s = load_tag_settings(dataset_path)
    fam = family or (s.family if s is not None else None)
    if fam is None:
        raise ValueError(
            f"{dataset_path} has no tag_settings.json: give --family (the backbone the "
            "rollouts use, e.g. qwen2_5_vl)"
        )
    labels = tuple(s.labels) if s is not None and s.labels else None
    return resolve_family(fam), labels


def export_dataset(args: ExportArguments) -> ExportSummary:
    """Write ``args.dataset_path`` in ``args.format``'s layout under ``args.output_dir``."""
    fmt = (args.format or "").lower()
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    if args.val_size < 0:
        raise ValueError(f"--val_size must be >= 0, got {args.val_size}")
    ds = _load(args.dataset_path)
    family, labels = _settings(args.dataset_path, args.family)
    if args.val_size >= len(ds):
        raise ValueError(f"--val_size {args.val_size} leaves no training rows ({len(ds)} rows)")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_train = len(ds) - args.val_size
    splits = {"train": range(n_train)}
    if args.val_size:
        splits["val"] = range(n_train, len(ds))
    files, rows = [], {}
    for split, idx in splits.items():
        records = [_record(ds[i], i, split, family, labels, args) for i in idx]
        path = _WRITERS[fmt](records, out, split, args)
        files.append(str(path))
        rows[split] = len(records)
    return ExportSummary(format=fmt, files=files, rows=rows, family=family)


def _record(
    row: dict[str, Any],
    index: int,
    split: str,
    family: str,
    labels: Sequence[str] | None,
    args: ExportArguments,
) -> dict[str, Any]:
    image = row["image"]
    if isinstance(image, list):
        image = image[0]
    if image is None or not hasattr(image, "size"):
        from tag_model.datasets import DatasetImageError

        raise DatasetImageError(f"{args.dataset_path}: row {index} has no image")
    try:
        gt = GroundTruth(
            label=row["label"],
            activated=row["activated"],
            image_size=tuple(image.size),
            family=family,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            labels=labels,
        )
    except ValueError as exc:
        from tag_model.datasets import DatasetFormatError

        raise DatasetFormatError(f"{args.dataset_path}: row {index}: {exc}") from None
    messages = placeholder_messages(row["prompt"])
    return {
        "index": index,
        "split": split,
        "id": str(row.get("id") or index),
        "label": gt.label,
        "image": image.convert("RGB"),
        "messages": messages,
        "ground_truth": gt.to_json(),
    }


def _image_features() -> Any:
    from datasets import Image, List

    return List(Image())


def _write_verl(records: list[dict[str, Any]], out: Path, split: str, args: Any) -> Path:
    from datasets import Dataset, Features, Value

    feats = Features(
        {
            "data_source": Value("string"),
            "prompt": [{"role": Value("string"), "content": Value("string")}],
            "images": _image_features(),
            "ability": Value("string"),
            "reward_model": {"style": Value("string"), "ground_truth": Value("string")},
            "extra_info": {
                "split": Value("string"),
                "index": Value("int64"),
                "id": Value("string"),
                "label": Value("string"),
            },
        }
    )
    data = {
        "data_source": [args.data_source] * len(records),
        "prompt": [r["messages"] for r in records],
        "images": [[r["image"]] for r in records],
        "ability": ["facial_expression"] * len(records),
        "reward_model": [{"style": "rule", "ground_truth": r["ground_truth"]} for r in records],
        "extra_info": [
            {"split": r["split"], "index": r["index"], "id": r["id"], "label": r["label"]}
            for r in records
        ],
    }
    path = out / f"{split}.parquet"
    Dataset.from_dict(data, features=feats).to_parquet(str(path))
    return path


def _write_easyr1(records: list[dict[str, Any]], out: Path, split: str, args: Any) -> Path:
    from datasets import Dataset, Features, Value

    feats = Features(
        {"problem": Value("string"), "answer": Value("string"), "images": _image_features()}
    )
    data = {
        "problem": [_prompt_text(r["messages"]) for r in records],
        "answer": [r["ground_truth"] for r in records],
        "images": [[r["image"]] for r in records],
    }
    path = out / f"{split}.parquet"
    Dataset.from_dict(data, features=feats).to_parquet(str(path))
    return path


def _write_openrlhf(records: list[dict[str, Any]], out: Path, split: str, args: Any) -> Path:
    images = out / "images"
    images.mkdir(exist_ok=True)
    path = out / f"{split}.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            img = (images / f"{r['index']:07d}.png").resolve()
            r["image"].save(img)
            line = {
                "prompt": r["messages"],
                "images": [str(img)],
                "label": r["ground_truth"],
                "datasource": args.data_source,
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


_WRITERS = {"verl": _write_verl, "easyr1": _write_easyr1, "openrlhf": _write_openrlhf}
