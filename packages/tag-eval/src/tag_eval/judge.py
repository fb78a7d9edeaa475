"""Pairwise preference study of two runs' traces on the same images (``tag-eval compare``).

The **LLM judge** (:class:`JudgeClient`) is any OpenAI-compatible ``/chat/completions``
endpoint (vLLM, llama.cpp, a hosted API). It gets the image, the two traces (with their boxes
in image pixels) and a rubric (:data:`RUBRIC`) scoring :data:`CRITERIA`. Every pair is judged
twice with the positions swapped; per criterion the two verdicts are summed (+1 for run A,
-1 for run B, 0 for a tie) and the sign gives win / tie / loss for run A, so a judge that
always prefers one position yields ties. People judge the same pairs through
:mod:`tag_eval.human_study`, which :func:`compare_runs` calls with ``export_human=True``.

Results (:func:`summarize_outcomes`) are win / tie / loss counts and rates per criterion, each
rate with a Wilson score interval.

The API key is read from the environment variable named in :class:`JudgeConfig`
(``api_key_env``); it is sent in the ``Authorization`` header and never written or logged.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tag_model.chat import ChatClient, ChatConfig, ChatError, image_data_url
from tag_model.jsonl import append_jsonl

from tag_eval._records import EvalInputError, load_record_image, load_run, read_records, write_json
from tag_eval.metrics import wilson_ci

__all__ = [
    "CRITERIA",
    "RUBRIC",
    "JudgeClient",
    "JudgeConfig",
    "JudgeError",
    "combine_swapped",
    "compare_runs",
    "pair_runs",
    "parse_verdict",
    "summarize_outcomes",
]

CRITERIA: tuple[str, ...] = ("visual_faithfulness", "anatomical_precision", "logical_coherence")

RUBRIC = """You are an expert in the Facial Action Coding System (FACS) judging two explanations \
of the same face image. Each explanation inspects facial regions, names Action Units (AUs) \
with bounding boxes [x1,y1,x2,y2] in image pixels, and concludes with an emotion.

Compare explanation A and explanation B on three criteria:
- visual_faithfulness: the AUs and observations match what is actually visible in the image; \
no invented muscle movements.
- anatomical_precision: each box tightly covers the facial region where its AU acts (e.g. AU12 \
at the lip corners, AU4 between the brows) and lies on the face.
- logical_coherence: the steps follow from each other and the named AUs support the final \
emotion (e.g. AU6 + AU12 -> happiness).

For each criterion answer "A", "B" or "tie". Reply with a single JSON object and nothing else:
{"visual_faithfulness": "A|B|tie", "anatomical_precision": "A|B|tie", \
"logical_coherence": "A|B|tie", "rationale": "<one sentence>"}"""


class JudgeError(RuntimeError):
    """The judge endpoint failed after all retries, or refused the request."""


@dataclass
class JudgeConfig:
    """Where and how to reach the judge.

    ``base_url`` is the API root (``http://host:8000/v1``); requests go to
    ``{base_url}/chat/completions``. The key is read from ``os.environ[api_key_env]`` when
    the request is made (absent = no ``Authorization`` header) and never stored here.
    """

    base_url: str
    model: str
    api_key_env: str = "TAG_JUDGE_API_KEY"
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    temperature: float = 0.0
    max_tokens: int = 512
    send_images: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)

    def chat_config(self) -> ChatConfig:
        """The :class:`tag_model.chat.ChatConfig` the judge's client uses."""
        return ChatConfig(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            timeout=self.timeout,
            max_retries=self.retries,
            backoff=self.backoff,
            concurrency=1,
            params={
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                **self.extra_body,
            },
            retry_malformed=True,
        )


class JudgeClient:
    """The judge's chat client: a :class:`tag_model.chat.ChatClient` plus the judging prompt.

    Retries (``config.retries`` times, exponential backoff) on connection errors, timeouts,
    HTTP 408/409/425/429, 5xx and unreadable replies; other HTTP errors raise
    :class:`JudgeError` at once.
    """

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self._client = ChatClient(config.chat_config())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(self, messages: list[dict[str, Any]]) -> str:
        """POST one chat completion and return the first choice's text."""
        try:
            return self._client.chat(messages)
        except ChatError as exc:
            raise JudgeError(f"judge: {exc}") from exc

    def judge(self, image: Any, trace_a: str, trace_b: str) -> tuple[dict[str, str | None], str]:
        """Judge one ordered pair; returns ``(verdict, raw_text)`` (see :func:`parse_verdict`)."""
        content: list[dict[str, Any]] = []
        if image is not None and self.config.send_images:
            content.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
        content.append(
            {
                "type": "text",
                "text": f"Explanation A:\n{trace_a}\n\nExplanation B:\n{trace_b}\n\n"
                "Which is better on each criterion? Answer with the JSON object only.",
            }
        )
        messages = [
            {"role": "system", "content": RUBRIC},
            {"role": "user", "content": content},
        ]
        raw = self.chat(messages)
        return parse_verdict(raw), raw


_JSON_OBJ = re.compile(r"\{.*\}", re.DOTALL)


def _norm_choice(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    s = v.strip().strip(".").lower()
    if s in {"a", "explanation a", "response a", "1"}:
        return "A"
    if s in {"b", "explanation b", "response b", "2"}:
        return "B"
    if s in {"tie", "equal", "same", "draw", "both", "neither"}:
        return "tie"
    return None


def parse_verdict(text: str) -> dict[str, str | None]:
    """Per-criterion ``"A"``, ``"B"``, ``"tie"``, or ``None`` when the judge's text has no
    usable answer. Never raises.

    >>> parse_verdict('ok {"visual_faithfulness": "A", "anatomical_precision": "tie"}')
    {'visual_faithfulness': 'A', 'anatomical_precision': 'tie', 'logical_coherence': None}
    """
    out: dict[str, str | None] = dict.fromkeys(CRITERIA)
    if not isinstance(text, str):
        return out
    m = _JSON_OBJ.search(text)
    if not m:
        return out
    try:
        obj = json.loads(m.group(0))
    except ValueError:
        return out
    if not isinstance(obj, dict):
        return out
    for c in CRITERIA:
        out[c] = _norm_choice(obj.get(c))
    return out


def combine_swapped(
    first: Mapping[str, str | None], second: Mapping[str, str | None]
) -> dict[str, int | None]:
    """Outcome for run A per criterion from two verdicts.

    ``first`` judged (A=run A, B=run B); ``second`` the swapped order (A=run B, B=run A).
    Each verdict scores +1 for run A, -1 for run B, 0 for a tie; the outcome is the sign of
    the sum (1 win, 0 tie, -1 loss), or ``None`` when either verdict is missing.

    >>> combine_swapped({"logical_coherence": "A"}, {"logical_coherence": "A"})["logical_coherence"]
    0
    >>> combine_swapped({"logical_coherence": "A"}, {"logical_coherence": "B"})["logical_coherence"]
    1
    """
    score_first = {"A": 1, "B": -1, "tie": 0}
    score_second = {"A": -1, "B": 1, "tie": 0}
    out: dict[str, int | None] = {}
    for c in CRITERIA:
        a, b = first.get(c), second.get(c)
        if a is None or b is None:
            out[c] = None
            continue
        s = score_first[a] + score_second[b]
        out[c] = (s > 0) - (s < 0)
    return out


def summarize_outcomes(
    outcomes: Sequence[Mapping[str, int | None]], *, level: float = 0.95
) -> dict[str, Any]:
    """Win / tie / loss of run A per criterion, rates with Wilson intervals.

    ``outcomes`` holds one mapping per judged item: criterion -> 1 / 0 / -1 / ``None``
    (``None`` = invalid, left out and counted in ``invalid``).
    """
    out: dict[str, Any] = {}
    for c in CRITERIA:
        vals = [o.get(c) for o in outcomes]
        valid = [v for v in vals if v is not None]
        n = len(valid)
        counts = {"win": valid.count(1), "tie": valid.count(0), "loss": valid.count(-1)}
        entry: dict[str, Any] = {"n": n, "invalid": len(vals) - n, **counts}
        for k, cnt in counts.items():
            lo, hi = wilson_ci(cnt, n, level=level)
            entry[f"{k}_rate"] = cnt / n if n else None
            entry[f"{k}_ci"] = [lo, hi] if n else None
        out[c] = entry
    out["level"] = level
    return out


def pair_runs(
    run_a: str | os.PathLike[str], run_b: str | os.PathLike[str]
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Load two runs and pair their records by sample id (same image, same label space).

    Returns ``(meta_a, meta_b, pairs)``, pairs in run A's order.
    """
    meta_a, recs_a = load_run(run_a)
    meta_b, recs_b = load_run(run_b)
    sa, sb = meta_a["label_space"], meta_b["label_space"]
    if sa["names"] != sb["names"]:
        raise EvalInputError(
            f"runs use different label spaces: {run_a} has {sa['name']!r} ({', '.join(sa['names'])}), "
            f"{run_b} has {sb['name']!r} ({', '.join(sb['names'])})"
        )
    by_id = {r["id"]: r for r in recs_b}
    pairs = []
    for r in recs_a:
        other = by_id.get(r["id"])
        if other is None:
            continue
        if r.get("path") != other.get("path") or r.get("label") != other.get("label"):
            raise EvalInputError(
                f"sample {r['id']!r} differs between runs: {run_a} has "
                f"{r.get('path')!r}/{r.get('label')!r}, {run_b} has "
                f"{other.get('path')!r}/{other.get('label')!r}"
            )
        pairs.append((r, other))
    if not pairs:
        raise EvalInputError(f"runs {run_a} and {run_b} share no sample ids: nothing to compare")
    return meta_a, meta_b, pairs


def _trace_for_judge(rec: Mapping[str, Any]) -> str:
    text = rec.get("trace") or ""
    pairs = rec.get("pred_pairs") or []
    if pairs:
        boxes = "; ".join(
            f"{'AU' + str(p['au']) if p['au'] else 'box'} [{', '.join(f'{v:.0f}' for v in p['box'])}]"
            for p in pairs
        )
        text += f"\n(Boxes in image pixels: {boxes})"
    return text


def compare_runs(
    run_a: str | os.PathLike[str],
    run_b: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    judge: JudgeConfig | None = None,
    export_human: bool = False,
    limit: int | None = None,
    seed: int = 0,
    level: float = 0.95,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare two runs on their shared images.

    With ``judge``, every pair is judged twice (positions swapped); judgments are appended
    to ``out_dir/judgments.jsonl`` as they come, so an interrupted comparison resumes. With
    ``export_human``, writes the human-study page and answer sheet
    (:func:`tag_eval.human_study.export_human_study`). Writes and returns
    ``out_dir/compare.json``.
    """
    meta_a, meta_b, pairs = pair_runs(run_a, run_b)
    if limit is not None:
        pairs = pairs[:limit]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "run_a": {"dir": str(run_a), "model": meta_a.get("model"), "prompt": meta_a.get("prompt")},
        "run_b": {"dir": str(run_b), "model": meta_b.get("model"), "prompt": meta_b.get("prompt")},
        "n_pairs": len(pairs),
        "criteria": list(CRITERIA),
    }
    if judge is not None:
        cfg = asdict(judge)
        cfg.pop("extra_body", None)
        summary["judge_config"] = cfg  # holds the env var's name, never the key
        jpath = out / "judgments.jsonl"
        done, _ = read_records(jpath, repair=True)
        for lineno, d in enumerate(done, start=1):
            if d.get("judge_model") != judge.model:
                raise EvalInputError(
                    f"{jpath}:{lineno}: judged by {d.get('judge_model')!r}, not {judge.model!r}; "
                    "use another --output_dir to compare with a different judge"
                )
        done_ids = {d["id"] for d in done}
        todo = [p for p in pairs if p[0]["id"] not in done_ids]
        iterator: Any = todo
        if progress:
            from tqdm import tqdm

            iterator = tqdm(todo, desc="judging", unit="pair")
        with JudgeClient(judge) as client:
            for ra, rb in iterator:
                image = load_record_image(ra, run_a)
                ta, tb = _trace_for_judge(ra), _trace_for_judge(rb)
                rec: dict[str, Any] = {"id": ra["id"], "judge_model": judge.model}
                try:
                    v1, raw1 = client.judge(image, ta, tb)
                    v2, raw2 = client.judge(image, tb, ta)
                    rec.update(first=v1, second=v2, raw=[raw1, raw2])
                    rec["outcome"] = combine_swapped(v1, v2)
                except JudgeError as exc:
                    rec.update(error=str(exc), outcome=dict.fromkeys(CRITERIA))
                append_jsonl(jpath, [rec])
                done.append(rec)
        wanted = {p[0]["id"] for p in pairs}
        outcomes = [d["outcome"] for d in done if d["id"] in wanted]
        if outcomes and all(d.get("error") for d in done if d["id"] in wanted):
            raise JudgeError(f"every judgment failed; first error: {done[0]['error']}")
        summary["judge"] = summarize_outcomes(outcomes, level=level)
        summary["judge_errors"] = sum(1 for d in done if d["id"] in wanted and d.get("error"))
    if export_human:
        from tag_eval.human_study import export_human_study

        summary["human_export"] = export_human_study(
            pairs, out, run_a=run_a, run_b=run_b, seed=seed
        )
    write_json(out / "compare.json", summary)
    return summary
