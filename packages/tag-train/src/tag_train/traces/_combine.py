"""``tag-train traces combine``: join shard builds (``--shard I/N``) into one trace dataset.

One vLLM server and one shard per machine: every machine runs the same command with its own
``--shard I/N`` and ``--output_dir``; the shard folders are then copied to one place and
combined. The result equals an unsharded build: same rows, same order (dataset order).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tag_train.traces._builder import (
    _BUILD,
    _MANIFEST,
    _RECORDS,
    FINAL_STATUSES,
    BuildSummary,
    _summarise,
    load_records,
    parse_shard,
)

__all__ = ["ShardCombineError", "combine_shards"]


class ShardCombineError(ValueError):
    """Shards that cannot be combined (the message names the shard folder and the problem)."""


def _index(sid: str) -> int:
    return int(sid.split(":", 2)[1])


def combine_shards(
    output_dir: str | os.PathLike[str],
    shard_dirs: Sequence[str | os.PathLike[str]],
    *,
    overwrite: bool = False,
) -> BuildSummary:
    """Check and join shard builds into one dataset saved in ``output_dir``.

    Checks: every folder is a finished shard build (``_build/manifest.json``, its dataset
    saved); all share the dataset fingerprint, row count, teacher, detector and settings
    (everything but the shard); shards ``0..N-1`` each appear once; every dataset row has
    exactly one final record (none missing, none repeated, none left in ``teacher_error``).

    Writes ``output_dir`` (the dataset, in dataset order), ``_build/records.jsonl`` (all
    records), ``_build/manifest.json`` (the shared manifest, ``shard`` null, the shard
    folders listed), ``_build/summary.json`` (combined counts) and ``tag_settings.json``.

    Raises:
        ShardCombineError: any check above fails.
    """
    import datasets as hfds

    out = Path(output_dir)
    if not shard_dirs:
        raise ShardCombineError("no shard folders given")
    shards = [Path(d) for d in shard_dirs]
    manifests: list[dict[str, Any]] = []
    for d in shards:
        man = d / _BUILD / _MANIFEST
        if not man.is_file():
            raise ShardCombineError(f"{d}: not a trace build (no {_BUILD}/{_MANIFEST})")
        manifests.append(json.loads(man.read_text()))

    def shared(m: dict[str, Any]) -> dict[str, Any]:
        return {**m, "config": {k: v for k, v in m["config"].items() if k != "shard"}}

    ref = shared(manifests[0])
    for d, m in zip(shards[1:], manifests[1:], strict=True):
        s = shared(m)
        if s != ref:
            diff = sorted(k for k in set(s) | set(ref) if s.get(k) != ref.get(k))
            if "config" in diff:
                diff.remove("config")
                diff += sorted(
                    f"config.{k}"
                    for k in set(s["config"]) | set(ref["config"])
                    if s["config"].get(k) != ref["config"].get(k)
                )
            raise ShardCombineError(
                f"{d}: built with other settings than {shards[0]} (differs in "
                f"{', '.join(diff)}); shards must share the dataset and every setting"
            )
    parsed = []
    for d, m in zip(shards, manifests, strict=True):
        try:
            parsed.append(parse_shard(m["config"].get("shard")))
        except ValueError as exc:
            raise ShardCombineError(f"{d}: {exc}") from None
    n = parsed[0][1]
    seen: dict[int, Path] = {}
    for d, (i, n_i) in zip(shards, parsed, strict=True):
        if n_i != n:
            raise ShardCombineError(f"{d}: shard {i}/{n_i}, but {shards[0]} is one of {n}")
        if i in seen:
            raise ShardCombineError(f"{d}: shard {i}/{n} given twice (also {seen[i]})")
        seen[i] = d
    missing_shards = sorted(set(range(n)) - set(seen))
    if missing_shards:
        raise ShardCombineError(
            f"shard(s) {', '.join(f'{i}/{n}' for i in missing_shards)} missing: got "
            f"{', '.join(f'{i}/{n}' for i in sorted(seen))}"
        )

    rows = int(ref["rows"])
    owner: dict[str, Path] = {}
    final: dict[int, dict[str, Any]] = {}
    for d, (i, _) in zip(shards, parsed, strict=True):
        recs = load_records(d)
        open_ids = []
        for sid, rec in recs.items():
            idx = int(rec.get("index", _index(sid)))
            if idx % n != i or not 0 <= idx < rows:
                raise ShardCombineError(
                    f"{d}: record {sid!r} (row {idx}) does not belong to shard {i}/{n}"
                )
            if sid in owner:
                raise ShardCombineError(f"{d}: id {sid!r} repeated (also in {owner[sid]})")
            owner[sid] = d
            if rec["status"] in FINAL_STATUSES:
                final[idx] = rec
            else:
                open_ids.append(sid)
        mine = set(range(i, rows, n))
        todo = sorted(mine - set(final))
        if todo:
            raise ShardCombineError(
                f"{d}: shard {i}/{n} is unfinished: {len(todo)} of {len(mine)} rows have no "
                f"final record ({len(open_ids)} in teacher_error), e.g. rows {todo[:5]}; rerun "
                "that shard's command to finish it"
            )
        if not (d / "state.json").is_file():
            raise ShardCombineError(f"{d}: the shard's dataset was not saved (no state.json)")

    parts = [hfds.load_from_disk(str(d)) for d in shards]
    for d, part in zip(shards, parts, strict=True):
        kept = {r["id"] for r in final.values() if r["status"] == "kept" and owner[r["id"]] == d}
        if set(part["id"]) != kept or len(part) != len(kept):
            raise ShardCombineError(
                f"{d}: its dataset ({len(part)} rows) does not match its kept records "
                f"({len(kept)}); rerun that shard's command to reassemble it"
            )
    joined = hfds.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    order = sorted(range(len(joined)), key=lambda k: _index(joined[k]["id"]))
    joined = joined.select(order).flatten_indices()

    out.mkdir(parents=True, exist_ok=True)
    build = out / _BUILD
    if (build / _MANIFEST).exists() and not overwrite:
        raise ShardCombineError(
            f"{out}: already holds a trace build; pass --overwrite to replace it"
        )
    build.mkdir(exist_ok=True)
    for p in out.iterdir():  # replace a previous assembly, keep _build
        if (p.name.startswith("data-") and p.suffix == ".arrow") or p.name in (
            "dataset_info.json",
            "state.json",
        ):
            p.unlink()
    joined.save_to_disk(str(out), num_shards=1 if len(joined) == 0 else None)
    ordered = [final[k] for k in sorted(final)]
    (build / _RECORDS).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered), encoding="utf-8"
    )
    manifest = {
        **ref,
        "config": {**ref["config"], "shard": None},
        "combined_from": [str(d) for d in shards],
    }
    (build / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    summary = _summarise(ordered, rows)
    summary.output_dir = str(out)
    seconds = 0.0
    for d in shards:
        sp = d / _BUILD / "summary.json"
        if sp.is_file():
            old = json.loads(sp.read_text())
            summary.requests += int(old.get("requests", 0))
            summary.teacher_errors += int(old.get("teacher_errors", 0))
            seconds = max(seconds, float(old.get("seconds", 0.0)))
    summary.seconds = seconds
    (build / "summary.json").write_text(
        json.dumps(
            {**dataclasses.asdict(summary), "detector": ref.get("detector"), "shards": n},
            indent=2,
        )
    )
    settings = shards[0] / "tag_settings.json"
    if settings.is_file():
        shutil.copyfile(settings, out / "tag_settings.json")
    return summary
