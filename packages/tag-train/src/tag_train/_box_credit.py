"""Per-box credit for GRPO: the coordinate tokens of each box learn from that box's own IoU.

GRPO gives every token of a completion one advantage, built from the sequence's rewards. In a
TAG trace most of that is "was the answer right", so the digits of a box get updates whose sign
has nothing to do with where the box lies, and the demo measured GRPO loosening boxes on every
seed. :class:`BoxCreditGRPOTrainer` keeps TRL's advantage on every other token and gives the
coordinate tokens of a box a *box advantage* instead:

1. every box whose step names an AU the detector sees gets a quality ``q``: its best IoU with a
   detector box of one of its AUs (image pixels, the backbone adapter's ``to_pixels``);
2. the boxes of one group (the completions of one prompt) that best match the same detector
   entry are placements of the same region; the baseline is their mean ``q``;
3. the box advantage is ``weight * (q - baseline) / std``, ``std`` being the standard deviation
   of ``q - baseline`` over every compared box in the batch (as ``scale_rewards="batch"``).

A box alone in its comparison set, an inspection box (no AU), and a box whose AUs the
detector does not see keep the sequence advantage: nothing compares their placement.

Per-claim credit (``claim_weight``, off by default) does the same for the number of each AU
named with a box: 1 if the detector sees the AU, else 0, against the mean of the group's claims.
Without it, naming AUs stays on the sequence advantage, where the grounding reward's precision
and recall act.

TRL's ``GRPOTrainer`` accepts ``[B, T]`` advantages from a subclass; nothing else changes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from accelerate.utils import gather_object
from trl import GRPOTrainer

from tag_train.rewards import _sizes

__all__ = ["BoxCreditGRPOTrainer", "BoxSpan", "box_advantages", "box_spans", "credit_boxes"]

_NUM = rb"(-?[0-9]+(?:\.[0-9]+)?)"
_W = rb"[ \t]*"
_COORDS = _NUM + (_W + rb"," + _W + _NUM) * 3
_BOX = re.compile(rb"<bbox>%s\[%s%s%s\]%s</bbox>" % (_W, _W, _COORDS, _W, _W), re.IGNORECASE)
_AU = re.compile(rb"au[ \t]*([0-9]+)", re.IGNORECASE)


@dataclass(frozen=True)
class BoxSpan:
    """One box of a completion: tokens ``[start, end)`` hold its coordinates."""

    start: int
    end: int
    aus: tuple[int, ...]
    box: tuple[float, float, float, float]  # in the model's coordinate space
    #: ``(au, start, end)``: the tokens ``[start, end)`` that spell each AU number
    claims: tuple[tuple[int, int, int], ...] = ()


def box_spans(ids: Sequence[int], table: Any) -> list[BoxSpan]:
    """The boxes in one completion's token ids and the tokens that spell their coordinates.

    ``table`` is a :class:`tag_model.grounding.TokenBytes` (``token_bytes(tokenizer)``). A box's
    AUs are the ``AU<n>`` mentions between the start of its line (or the previous box) and
    the box. Native ``<box>[[...]]</box>`` boxes count as ``<bbox>[...]</bbox>``.

    >>> from tag_model.grounding import TokenBytes
    >>> import numpy as np
    >>> words = [b"x AU12 ", b"<bbox>[", b"1", b"0,2", b"0,30,40", b"]</bbox>"]
    >>> data = np.frombuffer(b"".join(words), np.uint8)
    >>> offsets = np.cumsum([0] + [len(w) for w in words])
    >>> spans = box_spans([0, 1, 2, 3, 4, 5], TokenBytes(data, offsets))
    >>> spans[0].start, spans[0].end, spans[0].aus, spans[0].box, spans[0].claims
    (2, 5, (12,), (10.0, 20.0, 30.0, 40.0), ((12, 0, 1),))
    """
    from tag_model.grounding import normalise_native_boxes

    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    ok = (ids >= 0) & (ids < table.vocab_size)
    safe = np.where(ok, ids, 0)
    lens = np.where(ok, table.offsets[safe + 1] - table.offsets[safe], 0)
    ends = np.cumsum(lens)
    starts = ends - lens
    text = b"".join(
        table.data[table.offsets[t] : table.offsets[t + 1]].tobytes() for t in safe[ok].tolist()
    )
    # native boxes as <bbox>[...]</bbox>: the same length, so the offsets stay right
    text = normalise_native_boxes(np.frombuffer(text, np.uint8)).tobytes()
    out: list[BoxSpan] = []
    prev = 0
    for m in _BOX.finditer(text):
        line = max(text.rfind(b"\n", prev, m.start()) + 1, prev)
        mentions = list(_AU.finditer(text, line, m.start()))
        aus = tuple(int(x.group(1)) for x in mentions)
        claims = []
        for x in mentions:
            t = _tokens(starts, ends, lens, x.start(1), x.end(1))
            if t is not None:
                claims.append((int(x.group(1)), *t))
        prev = m.end()
        toks = _tokens(starts, ends, lens, m.start(1), m.end(4))
        if toks is not None:
            box = tuple(float(m.group(i)) for i in range(1, 5))
            out.append(BoxSpan(*toks, aus, box, tuple(claims)))  # type: ignore[arg-type]
    return out


def _tokens(
    starts: np.ndarray, ends: np.ndarray, lens: np.ndarray, a: int, b: int
) -> tuple[int, int] | None:
    """``[first, last + 1)`` of the tokens overlapping bytes ``[a, b)`` (None: none)."""
    toks = np.flatnonzero((starts < b) & (ends > a) & (lens > 0))
    return (int(toks[0]), int(toks[-1]) + 1) if toks.size else None


def box_advantages(
    records: Sequence[tuple[int, int, int, float]], weight: float = 1.0
) -> np.ndarray:
    """Box advantages for ``(group, row, detector entry, q)`` records (see the module doc).

    Returns ``float64[N]``; ``nan`` marks a box with nothing to compare against (alone in its
    group for its detector entry), which keeps the sequence advantage.

    >>> box_advantages([(0, 0, 1, 0.9), (0, 1, 1, 0.5), (0, 2, 0, 0.7)]).round(3).tolist()
    [1.0, -1.0, nan]
    """
    n = len(records)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    sets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (g, _row, m, _q) in enumerate(records):
        sets[(g, m)].append(i)
    q = np.asarray([r[3] for r in records], dtype=np.float64)
    resid = np.full(n, np.nan)
    for members in sets.values():
        if len(members) > 1:
            resid[members] = q[members] - q[members].mean()
    cmp = np.isfinite(resid)
    if not cmp.any():
        return out
    std = float(resid[cmp].std())
    out[cmp] = weight * resid[cmp] / (std + 1e-4)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[N, M]`` of xyxy pixel boxes (``tag_kernels.batched_box_iou``)."""
    from tag_kernels import batched_box_iou

    if a.size == 0 or b.size == 0:
        return np.zeros((len(a), len(b)), np.float32)
    return np.asarray(batched_box_iou(a[None].astype(np.float32), b[None].astype(np.float32)))[0]


def _records(
    spans: list[list[BoxSpan]],
    inputs: Sequence[dict[str, Any]],
    sizes: np.ndarray,
    adapter: Any,
    first_row: int,
    num_generations: int,
) -> list[tuple[int, int, int, float, int, int]]:
    """``(group, row, detector entry, q, start, end)`` for every box with a seen AU
    (``sizes``: ``[B, 2]`` image sizes, w and h)."""
    out = []
    for r, (row_spans, x, size) in enumerate(zip(spans, inputs, sizes, strict=True)):
        act = x.get("activated") or []
        if not row_spans or not act:
            continue
        det = np.asarray([a["box"] for a in act], np.float32).reshape(-1, 4)
        det_au = [int(a["au"]) for a in act]
        boxes = np.asarray([s.box for s in row_spans], np.float32)
        px = np.asarray(adapter.to_pixels(boxes, tuple(size.tolist())), np.float32)
        iou = _iou(np.nan_to_num(px), det)
        row = first_row + r
        for k, s in enumerate(row_spans):
            same = np.asarray([a in s.aus for a in det_au], dtype=bool)
            if not same.any():
                continue
            m = int(np.flatnonzero(same)[np.argmax(iou[k, same])])
            out.append((row // num_generations, row, m, float(iou[k, m]), s.start, s.end))
    return out


def _claim_records(
    spans: list[list[BoxSpan]],
    inputs: Sequence[dict[str, Any]],
    first_row: int,
    num_generations: int,
) -> list[tuple[int, int, int, float, int, int]]:
    """``(group, row, -1, q, start, end)`` for every AU named with a box: ``q`` is 1 when the
    detector sees the AU, else 0 (entry -1: a group's claims are compared with each other)."""
    out = []
    for r, (row_spans, x) in enumerate(zip(spans, inputs, strict=True)):
        seen = {int(a["au"]) for a in x.get("activated") or []}
        row = first_row + r
        for s in row_spans:
            for au, a, b in s.claims:
                out.append((row // num_generations, row, -1, float(au in seen), a, b))
    return out


def credit_boxes(
    advantages: Any,
    completion_ids: Any,
    completion_mask: Any,
    inputs: Sequence[dict[str, Any]],
    *,
    table: Any,
    adapter: Any,
    num_generations: int,
    weight: float = 1.0,
    claim_weight: float = 0.0,
    first_row: int = 0,
    gather: Any = None,
) -> tuple[Any, dict[str, float]]:
    """Sequence advantages -> token advantages with each compared box's own credit.

    Args:
        advantages: ``Tensor[B]``, GRPO's advantages for this process's completions.
        completion_ids: ``Tensor[B, T]``; completion_mask: ``Tensor[B, T]`` (1 on real tokens).
        inputs: the ``B`` rows (``activated`` in pixels, ``image`` or ``image_size``).
        table: the tokenizer's :class:`tag_model.grounding.TokenBytes`.
        adapter: the backbone's coordinate adapter (``to_pixels``).
        num_generations: completions per prompt (a group is ``num_generations`` rows).
        weight: the box advantage's scale (0: the boxes keep the sequence advantage).
        claim_weight: the same for the AU numbers named with a box (0: off): a claim the
            detector sees scores 1, another 0, against the mean of the group's claims.
        first_row: this process's first row in the global batch.
        gather: list -> list over processes (``accelerate.utils.gather_object``); None: one
            process.

    Returns:
        ``(Tensor[B, T] float32, stats)``: ``stats`` has ``compared`` (the share of boxes with a
        seen AU that had another box to compare with), ``iou`` (their mean IoU) and
        ``token_share`` (the share of completion tokens that got a box advantage).
    """
    n = len(inputs)
    lengths = completion_mask.sum(1).tolist()
    spans = [box_spans(completion_ids[i, : int(lengths[i])].tolist(), table) for i in range(n)]
    sizes = _sizes(
        n,
        [x.get("image", x.get("images")) for x in inputs],
        [x["image_size"] for x in inputs] if inputs and "image_size" in inputs[0] else None,
    )
    local = _records(spans, inputs, sizes, adapter, first_row, num_generations)
    everyone = gather(local) if gather is not None else local
    adv = box_advantages([r[:4] for r in everyone], weight)
    out = advantages.reshape(-1, 1).expand_as(completion_mask).clone().float()
    moved = _apply(out, everyone, adv, first_row) if weight else 0
    stats = {
        "compared": float(np.isfinite(adv).sum()) / max(1, len(everyone)),
        "iou": float(np.mean([r[3] for r in everyone])) if everyone else 0.0,
    }
    if claim_weight:
        local = _claim_records(spans, inputs, first_row, num_generations)
        claims = gather(local) if gather is not None else local
        moved += _apply(
            out, claims, box_advantages([r[:4] for r in claims], claim_weight), first_row
        )
        stats["claims_seen"] = float(np.mean([r[3] for r in claims])) if claims else 0.0
    stats["token_share"] = moved / max(1.0, float(sum(lengths)))
    return out, stats


def _apply(out: Any, records: Sequence[tuple], adv: np.ndarray, first_row: int) -> int:
    """Write each finite advantage on its record's tokens of ``out``; returns the tokens."""
    moved = 0
    for r, a in zip(records, adv, strict=True):
        row = r[1] - first_row
        if 0 <= row < out.shape[0] and np.isfinite(a):
            out[row, r[4] : r[5]] = float(a)
            moved += r[5] - r[4]
    return moved


class BoxCreditGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` whose box coordinate tokens learn from their own box's IoU
    (:func:`credit_boxes`).

    ``box_credit_weight`` scales the box advantage (0 turns it off: TRL's GRPO exactly).
    ``adapter`` is the backbone's coordinate adapter (``tag_model.backbones.get_adapter``).
    ``claim_credit_weight`` does the same for the claims (0, the default: off). Logs
    ``box_credit/compared``, ``box_credit/iou``, ``box_credit/token_share`` and, with claims,
    ``box_credit/claims_seen``.
    """

    def __init__(
        self,
        *args: Any,
        adapter: Any,
        box_credit_weight: float = 1.0,
        claim_credit_weight: float = 0.0,
        **kw: Any,
    ):
        super().__init__(*args, **kw)
        from tag_model.grounding import token_bytes

        self._box_adapter = adapter
        self._box_weight = float(box_credit_weight)
        self._claim_weight = float(claim_credit_weight)
        tok = getattr(self.processing_class, "tokenizer", self.processing_class)
        self._box_table = token_bytes(tok)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict:
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training or not (self._box_weight or self._claim_weight):
            return out
        out["advantages"], stats = credit_boxes(
            out["advantages"],
            out["completion_ids"],
            out["completion_mask"],
            inputs,
            table=self._box_table,
            adapter=self._box_adapter,
            num_generations=self.num_generations,
            weight=self._box_weight,
            claim_weight=self._claim_weight,
            first_row=self.accelerator.process_index * len(inputs),
            gather=gather_object,
        )
        for k, v in stats.items():
            self._metrics["train"][f"box_credit/{k}"].append(v)
        return out
