"""TRL reward functions for TAG: format, answer and AU grounding.

Each reward is a plain function ``f(completions, **columns) -> list[float | None]`` that TRL's
``GRPOTrainer`` calls with the dataset's columns (``label``, ``image``, ``activated``, ...)
plus ``log_metric``. Bad model output never raises: a completion that does not parse gets
0.0 from every reward.

The grounding reward is one batched pipeline with no per-completion Python on the hot path:

1. ``tag_model.grounding.parse_batch`` (compiled) turns B completions into padded arrays
   ``pred_au[B,K]``, ``pred_boxes[B,K,4]`` (model coordinates), ``format_ok[B]``;
2. the backbone adapter's ``to_pixels`` converts all boxes to image pixels at once;
3. ``tag_kernels.au_reward.au_grounding_reward`` scores every completion against its
   sample's activated list (class-aware by default) in one call.

On a CUDA run, pass ``token_ids=True`` and the tokenizer (``get_tag_rewards(...,
reward_device="cuda")``): the completions' token ids (TRL's ``completion_ids``, Python lists)
are padded once into a ``[B, T]`` tensor and moved to the GPU, ``parse_batch`` scans them there
(Triton), the grounding kernel scores them there (Triton), and only B floats (plus B flags for
the format and answer rewards, which share the parse) come back. Without CUDA the text path
runs. ``tag-train rl --reward_device auto`` times both paths on the GPU before training and
keeps the faster one (``bench/bench_completion_ids.py`` measures the list -> tensor -> device
step on its own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tag_model.activation import pack_activated
from tag_model.grounding import completion_texts

__all__ = [
    "RewardTimer",
    "answer_reward",
    "completion_texts",
    "format_reward",
    "get_answer_reward",
    "get_format_reward",
    "get_grounding_reward",
    "get_tag_rewards",
    "pack_activated",
]

RewardFunc = Callable[..., list[float | None]]


def _label_key(labels: Any) -> Any:
    """A hashable label set for ``parse_batch``: a label-space name or ``LabelSpace`` stays as
    it is, a list of names becomes a tuple, ``None`` means every canonical label."""
    if labels is None or isinstance(labels, str) or not isinstance(labels, Sequence):
        return labels
    return tuple(labels)


class _ParseCache:
    """One ``parse_batch`` per TRL call, shared by the rewards (same ``completions`` object).

    ``device=None`` parses the completions' text (Numba). With ``tokenizer`` and a ``device``
    (``"cuda"``), TRL's ``completion_ids`` are parsed on that device by the Triton scanner and
    the arrays stay there. ``device="cpu"`` runs the same Triton kernels on CPU tensors and
    only works under ``TRITON_INTERPRET=1``: it is the tests' way to check the token path
    against the text path on a machine without a GPU.
    """

    def __init__(self, tokenizer: Any = None, device: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.device = device if tokenizer is not None else None
        self._key: Any = None
        self._params: Any = None
        self._value: Any = None

    def parse(self, completions: Any, completion_ids: Any, labels: Any, max_pairs: int = 64) -> Any:
        params = (labels, max_pairs)
        if self._key is completions and self._params == params:
            return self._value
        from tag_model.grounding import parse_batch

        if self.device is not None and completion_ids is not None:
            value = _token_parse(completion_ids, self.tokenizer, labels, max_pairs, self.device)
        else:
            texts = completion_texts(completions)
            value = parse_batch(texts, labels=labels, max_pairs=max_pairs)
        self._key, self._params, self._value = completions, params, value  # keeps the list alive
        return value


def _token_parse(
    completion_ids: Sequence[Sequence[int]],
    tokenizer: Any,
    labels: Any,
    max_pairs: int,
    device: str,
) -> Any:
    """``parse_batch`` of TRL's ``completion_ids`` on ``device`` (Triton); arrays stay there."""
    from tag_model.grounding import label_table, parse_batch, token_bytes

    ids, lengths = _pad_ids(completion_ids, tokenizer, device=device)
    if ids.is_cuda:
        return parse_batch(
            ids, labels=labels, max_pairs=max_pairs, tokenizer=tokenizer, lengths=lengths
        )
    from tag_kernels._dispatch import triton_interpreting

    if not triton_interpreting():
        raise RuntimeError(
            "the token-id reward path on the CPU runs the Triton kernels in the interpreter "
            "(a test hook): set TRITON_INTERPRET=1, or use the text path"
        )
    from tag_model.grounding._triton import parse_batch_cuda

    pad = getattr(tokenizer, "pad_token_id", None)
    return parse_batch_cuda(
        ids, token_bytes(tokenizer), label_table(labels), max_pairs, pad, lengths
    )


class RewardTimer:
    """Accumulates the wall time spent inside reward functions (for the reward's step share)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def reset(self) -> float:
        s, self.seconds, self.calls = self.seconds, 0.0, 0
        return s


def _sizes(n: int, image: Sequence[Any] | None, image_size: Sequence[Any] | None) -> np.ndarray:
    """``[B,2]`` (w, h) from an ``image`` column of PIL images, or an ``image_size`` column."""
    if image_size is not None:
        return np.asarray(image_size, dtype=np.float32).reshape(n, 2)
    if image is None:
        raise ValueError("the grounding reward needs an `image` or an `image_size` column")
    sizes = np.empty((n, 2), dtype=np.float32)
    cache: dict[int, tuple[int, int]] = {}
    for i, im in enumerate(image):
        if isinstance(im, list):  # TRL "images" column: one image per prompt
            im = im[0] if im else None
        if im is None:
            raise ValueError(f"row {i} has no image, and there is no `image_size` column")
        key = id(im)
        if key not in cache:
            cache[key] = im.size
        sizes[i] = cache[key]
    return sizes


def _timed(fn: RewardFunc, timer: RewardTimer | None, name: str) -> RewardFunc:
    if timer is None:
        fn.__name__ = name
        return fn

    def wrapped(*args: Any, **kwargs: Any) -> list[float | None]:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timer.seconds += time.perf_counter() - t0
            timer.calls += 1

    wrapped.__name__ = name
    wrapped.__doc__ = fn.__doc__
    return wrapped


def get_grounding_reward(
    family: str,
    *,
    beta: float = 1.0,
    class_aware: bool = True,
    empty_value: float = 1.0,
    labels: Sequence[str] | None = None,
    require_format: bool = True,
    max_pairs: int = 64,
    backend: str | None = None,
    token_ids: bool = False,
    tokenizer: Any = None,
    device: str | None = None,
    processor: Any = None,
    timer: RewardTimer | None = None,
    _cache: _ParseCache | None = None,
) -> RewardFunc:
    """Build TAG's AU-grounding reward for a backbone family (TRL reward-function style).

    Args:
        family: backbone family (``"qwen2_vl"``, ``"qwen2_5_vl"``, ``"qwen3_vl"``); its adapter
            converts the model's boxes to image pixels.
        beta: F-beta weight of recall against precision.
        class_aware: match only boxes of the same AU (False: region-level matching).
        empty_value: reward when both the prediction and the detector are empty.
        labels: label set given to the parser (``None``: every canonical label).
        require_format: completions whose format does not parse score 0.0.
        max_pairs: K, the most (AU, box) pairs read from one completion.
        backend: kernel backend (``None``: dispatch on the array family).
        token_ids, tokenizer: GPU path (see the module docstring): parse TRL's
            ``completion_ids`` with the tokenizer on the GPU. Without CUDA the text path runs.
        device: the token path's device (default ``"cuda"``); ``"cpu"`` is a test hook that
            runs the same Triton kernels under ``TRITON_INTERPRET=1``.
        processor: the model's processor; Qwen2.5-VL's pixel budget (``min_pixels``,
            ``max_pixels``) is read from it, as the model's boxes live in the resized image.
        timer: accumulate the time spent here.

    The returned function reads the ``activated`` column (``[{au, prob, box}]`` in image
    pixels) and ``image`` (PIL, for the size) or ``image_size`` ``(w, h)``, and returns one
    float in ``[0, 1]`` per completion. If ``log_metric`` is passed (TRL does), it logs
    ``grounding/parse_failure_rate``, ``grounding/precision``, ``grounding/recall`` and
    ``grounding/pairs``.

    Example:
        >>> reward = get_grounding_reward("qwen2_vl")
        >>> text = ("Global analysis: a broad smile.\\nVerification loop:\\n"
        ...         "Inspect lip corners → pulled up → AU12 <bbox>[250,600,750,850]</bbox>\\n"
        ...         "Final conclusion: AU12 indicates happiness.\\n<answer> happiness </answer>")
        >>> act = [[{"au": 12, "prob": 0.9, "box": [25.0, 60.0, 75.0, 85.0]}]]
        >>> reward([text], activated=act, image_size=[(100, 100)])
        [1.0]
    """
    from tag_kernels.au_reward import au_grounding_reward
    from tag_model.backbones import get_adapter

    adapter = get_adapter(family, processor=processor)
    label_set = _label_key(labels)
    if _cache is not None:
        parser = _cache
    else:
        parser = _ParseCache(tokenizer, token_device(device) if token_ids else None)
    on_tokens = parser.device is not None
    kernel_backend = backend or ("triton" if on_tokens else None)

    def grounding_reward(
        completions: Sequence[Any],
        activated: Sequence[Sequence[Any]] | None = None,
        image: Sequence[Any] | None = None,
        image_size: Sequence[Any] | None = None,
        completion_ids: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = len(completions)
        if n == 0:
            return []
        if activated is None:
            raise ValueError("the grounding reward needs the dataset's `activated` column")
        pb = parser.parse(completions, completion_ids, label_set, max_pairs)
        sizes = _sizes(n, image if image is not None else kwargs.get("images"), image_size)
        ref_boxes, ref_au, ref_prob = pack_activated(activated)
        if hasattr(pb.pred_au, "is_cuda"):  # token path (torch): stay on the parse's device
            import torch

            dev = pb.pred_au.device
            pred_au = pb.pred_au.to(torch.int32)
            px = adapter.to_pixels(pb.pred_boxes.float(), torch.from_numpy(sizes).to(dev))
            valid = pred_au >= 0
            px = torch.where(
                valid[..., None], torch.nan_to_num(px, nan=0.0, posinf=0.0, neginf=0.0), 0.0
            )
            ok_t = pb.format_ok.bool()
            ref = [torch.from_numpy(x).to(dev) for x in (ref_boxes, ref_au, ref_prob)]
            res = au_grounding_reward(
                px.contiguous(),
                pred_au.contiguous(),
                *ref,
                beta=beta,
                class_aware=class_aware,
                empty_value=empty_value,
                backend=kernel_backend,
            )
            reward_t = torch.nan_to_num(res.reward.float(), nan=0.0)
            if require_format:
                reward_t = torch.where(ok_t, reward_t, 0.0)
            ok = ok_t.cpu().numpy()
            reward = reward_t.double().cpu().numpy()
            precision, recall = _np(res.precision), _np(res.recall)
            n_valid = _np(valid.sum(dim=1))
        else:
            # only the first max(n_pairs) columns hold pairs: trim the padding before the kernel
            k = max(1, int(np.max(pb.n_pairs))) if hasattr(pb, "n_pairs") else pb.pred_au.shape[1]
            pred_au = np.ascontiguousarray(pb.pred_au[:, :k], dtype=np.int32)
            ok = np.asarray(pb.format_ok, dtype=bool)
            px = np.asarray(
                adapter.to_pixels(np.asarray(pb.pred_boxes[:, :k], dtype=np.float32), sizes),
                dtype=np.float32,
            )
            valid = pred_au >= 0
            # padding boxes are 0 (and the kernel skips slots with pred_au < 0): only non-finite
            # values, which parse_batch never yields, need cleaning
            if not np.isfinite(px).all():
                px = np.where(
                    valid[..., None], np.nan_to_num(px, nan=0.0, posinf=0.0, neginf=0.0), 0.0
                )
            res = au_grounding_reward(
                np.ascontiguousarray(px, dtype=np.float32),
                pred_au,
                ref_boxes,
                ref_au,
                ref_prob,
                beta=beta,
                class_aware=class_aware,
                empty_value=empty_value,
                backend=backend,
            )
            reward = np.asarray(res.reward, dtype=np.float64)
            keep = np.isfinite(reward)
            if require_format:
                keep &= ok
            if not keep.all():
                reward = np.where(keep, reward, 0.0)
            precision, recall = np.asarray(res.precision), np.asarray(res.recall)
            n_valid = valid.sum(axis=1)
        if log_metric is not None:
            log_metric("grounding/parse_failure_rate", float(1.0 - ok.mean()))
            log_metric("grounding/precision", float(np.where(ok, precision, 0.0).mean()))
            log_metric("grounding/recall", float(np.where(ok, recall, 0.0).mean()))
            log_metric("grounding/pairs", float(np.mean(n_valid)))
        return reward.tolist()

    return _timed(grounding_reward, timer, "grounding_reward")


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _pad_ids(
    completion_ids: Sequence[Sequence[int]], tokenizer: Any, device: str
) -> tuple[Any, Any]:
    """TRL's ``completion_ids`` (lists) -> ``(ids[B, T] int64, lengths[B])`` on ``device``.

    One flat NumPy copy of all the ids, one masked scatter into the padded array, one
    (pinned, non-blocking) host-to-device copy; see ``bench/bench_completion_ids.py``.
    """
    import itertools

    import torch

    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
    lengths = np.fromiter(
        (len(c) for c in completion_ids), dtype=np.int64, count=len(completion_ids)
    )
    t = max(1, int(lengths.max()) if len(lengths) else 1)
    flat = np.fromiter(
        itertools.chain.from_iterable(completion_ids), dtype=np.int64, count=int(lengths.sum())
    )
    out = np.full((len(completion_ids), t), pad, dtype=np.int64)
    out[np.arange(t) < lengths[:, None]] = flat
    ids, lens = torch.from_numpy(out), torch.from_numpy(lengths)
    if torch.device(device).type == "cuda":
        ids, lens = ids.pin_memory(), lens.pin_memory()
    return ids.to(device, non_blocking=True), lens.to(device, non_blocking=True)


def token_device(device: str | None = None) -> str | None:
    """The device of the token-id reward path: ``device`` (default ``"cuda"``), or None (the
    text path) when that is CUDA and no CUDA device is present."""
    import torch

    device = device or "cuda"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return None
    return device


def get_format_reward(
    labels: Sequence[str] | None = None,
    *,
    timer: RewardTimer | None = None,
    _cache: _ParseCache | None = None,
) -> RewardFunc:
    """1.0 when the completion is a well-formed TAG trace (``parse_batch(...).format_ok``), else 0.0.

    Args:
        labels: the answers that count as well formed: a label-space name (``"rafdb"``), a
            ``LabelSpace``, a list of names, or ``None`` for every canonical label.
        timer: accumulate the time spent here.

    Completions are strings or chat messages (read by ``tag_model.grounding.completion_text``).
    Logs ``format/failure_rate`` through ``log_metric`` when TRL passes it.

    Example:
        >>> trace = ("Global analysis: raised cheeks.\\nVerification loop:\\n"
        ...          "Inspect cheeks → raised → AU6 <bbox>[156,208,285,314]</bbox>\\n"
        ...          "Final conclusion: AU6 indicates happiness.\\n<answer> happiness </answer>")
        >>> f = get_format_reward()
        >>> f([trace, "I think it's happy.", [{"role": "assistant", "content": trace}]])
        [1.0, 0.0, 1.0]
        >>> get_format_reward("rafdb")([trace.replace("happiness </answer>", "contempt </answer>")])
        [0.0]
    """

    label_set = _label_key(labels)

    def format_reward(
        completions: Sequence[Any],
        completion_ids: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if not completions:
            return []
        pb = (_cache or _ParseCache()).parse(completions, completion_ids, label_set)
        ok = _np(pb.format_ok).astype(bool)
        if log_metric is not None:
            log_metric("format/failure_rate", float(1.0 - ok.mean()))
        return ok.astype(np.float64).tolist()

    return _timed(format_reward, timer, "format_reward")


def get_answer_reward(
    labels: Sequence[str] | None = None,
    *,
    require_format: bool = True,
    timer: RewardTimer | None = None,
    _cache: _ParseCache | None = None,
) -> RewardFunc:
    """1.0 when the ``<answer>`` names the sample's ``label`` column, else 0.0.

    Args:
        labels: the answers the parser accepts (as for :func:`get_format_reward`).
        require_format: completions whose format does not parse score 0.0 (``False`` scores
            any answer the parser finds).
        timer: accumulate the time spent here.

    ``label`` is in canonical names or synonyms (``"happy"``). A row whose label is ``None`` or
    not an emotion gives ``None``, which TRL leaves out of the reward's mean. Logs
    ``answer/accuracy`` (over the rows with a label) through ``log_metric``.

    Example:
        >>> trace = ("Global analysis: raised cheeks.\\nVerification loop:\\n"
        ...          "Inspect cheeks → raised → AU6 <bbox>[156,208,285,314]</bbox>\\n"
        ...          "Final conclusion: AU6 indicates happiness.\\n<answer> Happy </answer>")
        >>> f = get_answer_reward()
        >>> f([trace, trace, trace], label=["happiness", "anger", "bored"])
        [1.0, 0.0, None]
        >>> get_answer_reward(require_format=False)(["<answer>fear</answer>"], label=["afraid"])
        [1.0]
    """
    from tag_model.au import canonical_label

    label_set = _label_key(labels)

    def answer_reward(
        completions: Sequence[Any],
        label: Sequence[str] | None = None,
        completion_ids: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if not completions:
            return []
        if label is None:
            raise ValueError("the answer reward needs the dataset's `label` column")
        pb = (_cache or _ParseCache()).parse(completions, completion_ids, label_set)
        if len(label) != len(completions):
            raise ValueError(
                f"the answer reward got {len(completions)} completions but {len(label)} labels"
            )
        names = pb_answer_names(pb, label_set)
        gold = [canonical_label(x) if isinstance(x, str) else None for x in label]
        ok = _np(pb.format_ok).astype(bool).tolist() if require_format else [True] * len(names)
        out: list[float | None] = [
            None if g is None else float(k and a is not None and a == g)
            for a, g, k in zip(names, gold, ok, strict=True)
        ]
        scored = [v for v in out if v is not None]
        if log_metric is not None and scored:
            log_metric("answer/accuracy", float(np.mean(scored)))
        return out

    return _timed(answer_reward, timer, "answer_reward")


def pb_answer_names(pb: Any, labels: Sequence[str] | None = None) -> list[str | None]:
    """Canonical answer names of a ``ParsedBatch`` (None where there is no valid answer)."""
    names = tuple(getattr(pb, "labels", None) or labels or ())
    ids = _np(pb.answer_id).tolist()
    return [names[i] if 0 <= i < len(names) else None for i in ids]


def get_tag_rewards(
    family: str,
    *,
    labels: Sequence[str] | None = None,
    beta: float = 1.0,
    class_aware: bool = True,
    empty_value: float = 1.0,
    processor: Any = None,
    timer: RewardTimer | None = None,
    reward_device: str | None = None,
    tokenizer: Any = None,
) -> list[RewardFunc]:
    """The three TAG rewards ``[format, answer, grounding]`` (weights go in ``GRPOConfig.reward_weights``).

    They share one parse per TRL call. ``reward_device=None`` or ``"cpu"``: the completions'
    text is parsed (Numba). ``"cuda"``: TRL's ``completion_ids`` are parsed and scored on the
    GPU with Triton (``tokenizer``, default ``processor.tokenizer``, maps ids to bytes); raises
    without CUDA. ``"cpu-triton"`` is the tests' hook: the token path's Triton kernels on CPU
    tensors, under ``TRITON_INTERPRET=1``.
    """
    tok = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", processor)
    device: str | None = None
    if reward_device == "cuda":
        device = token_device("cuda")
        if device is None:
            raise ValueError("reward_device='cuda' needs a CUDA device (use 'auto' or 'cpu')")
    elif reward_device == "cpu-triton":
        device = "cpu"
    elif reward_device not in (None, "cpu"):
        raise ValueError(f"reward_device must be cpu, cuda or cpu-triton, got {reward_device!r}")
    if device is not None and tok is None:
        raise ValueError("the token-id reward path needs the tokenizer (tokenizer= or processor=)")
    cache = _ParseCache(tok, device)
    return [
        get_format_reward(labels, timer=timer, _cache=cache),
        get_answer_reward(labels, timer=timer, _cache=cache),
        get_grounding_reward(
            family,
            beta=beta,
            class_aware=class_aware,
            empty_value=empty_value,
            labels=labels,
            processor=processor,
            token_ids=device is not None,
            tokenizer=tok,
            device=device,
            timer=timer,
            _cache=cache,
        ),
    ]


#: TRL-style default rewards (every canonical label accepted): ``format_reward(completions)``,
#: ``answer_reward(completions, label=[...])``.
format_reward: RewardFunc = get_format_reward()
answer_reward: RewardFunc = get_answer_reward()
