"""A deterministic corpus of valid and malformed TAG traces, for the grounding tests."""

from __future__ import annotations

import random

import numpy as np
from tag_model.au import AU_CATALOGUE, CANONICAL_LABELS
from tag_model.grounding import ParsedBatch, parse_trace

KNOWN_AUS = sorted(AU_CATALOGUE)
SPELLINGS = ("AU{n}", "AU{n:02d}", "au{n}", "AU {n}", "Au{n}", "AU\t{n}", "AU00{n}")
ANSWERS = (
    *CANONICAL_LABELS,
    "Happy",
    " SAD ",
    "surprised",
    "afraid",
    "angry",
    "disgusted",
    "contemptuous",
    "Happiness.",
    "joyful",
    "happy sad",
    "\n fear \n",
    "hap\u00adpy",
    "ｈａｐｐｙ",
    "",
)
WORDS = (
    "cheeks",
    "brows",
    "the mouth",
    "lip corners",
    "raised",
    "lowered",
    "wrinkled",
    "nose",
    "AU5 visible",
    "au",
    "AUs",
    "→",
    "->",
    "Inspect",
    "x",
    "é",
    "日本",
    "<b>",
    "[1,2]",
    "12",
)
TAGS = (
    "<answer>",
    "</answer>",
    "<bbox>",
    "</bbox>",
    "Global analysis:",
    "Verification loop:",
    "Final conclusion:",
    "→",
    "->",
    "\n",
    "[",
    "]",
    ",",
    "AU",
    "Inspect ",
    "<ANSWER>",
    "</BBOX>",
    "\nFinal conclusion: AU6\n",
    "\nInspect a → b → AU4 <bbox>[1,2,3,4]</bbox>\n",
)
NUMBERS = (
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e5",
    "-3",
    "99999999999999999",
    "1.5",
    "",
    "..",
    "12.",
    "0.0000000000000001",
    "1000001",
    "-0",
    "007",
    "3.14159",
    "1,2",
    " 5 ",
    "+4",
    "0x10",
    "123456789012345",
    "1234567890123456",
    "12345678.9012345",
)
UNICODE = (
    "é",
    "→",
    "\u2028",
    "\x00",
    "\ud800",
    "\u00a0",
    "\u3000",
    "😀",
    "\r",
    "\x1c",
    "\x85",
    "\ufeff",
    "ı",
    "İ",
    "\t",
    "\x0b",
)


def _box(rng: random.Random) -> str:
    def num() -> str:
        r = rng.random()
        if r < 0.7:
            return str(rng.randint(0, 1000))
        if r < 0.9:
            return f"{rng.uniform(0, 1000):.{rng.randint(1, 4)}f}"
        return rng.choice(NUMBERS)

    x1, y1 = rng.randint(0, 900), rng.randint(0, 900)
    vals = [str(x1), str(y1), str(x1 + rng.randint(1, 100)), str(y1 + rng.randint(1, 100))]
    if rng.random() < 0.15:
        vals[rng.randrange(4)] = num()
    if rng.random() < 0.05:
        vals[0], vals[2] = vals[2], vals[0]
    sep = rng.choice((",", ", ", " , ", ","))
    body = sep.join(vals)
    if rng.random() < 0.9:
        body = f"[{body}]"
    return f"<bbox>{body}</bbox>"


def _aus(rng: random.Random) -> str:
    k = rng.choice((0, 1, 1, 1, 2, 2, 3))
    out = []
    for _ in range(k):
        n = rng.choice(KNOWN_AUS) if rng.random() < 0.95 else rng.choice((0, 3, 99, 1234, 46))
        out.append(rng.choice(SPELLINGS).format(n=n))
    return rng.choice((" ", " + ", ", ")).join(out)


def valid_trace(rng: random.Random, n_steps: int | None = None) -> str:
    """A trace in the format (occasionally with unknown AUs or odd numbers)."""
    arrow = rng.choice(("→", "->", "→"))
    steps = []
    for _ in range(n_steps if n_steps is not None else rng.randint(1, 8)):
        region = rng.choice(WORDS[:8])
        obs = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4))).replace("→", "")
        obs = obs.replace("->", "")
        steps.append(f"Inspect {region} {arrow} {obs} {arrow} {_aus(rng)} {_box(rng)}")
    concl = " + ".join(rng.choice(SPELLINGS).format(n=rng.choice(KNOWN_AUS)) for _ in range(2))
    answer = rng.choice(ANSWERS[:8]) if rng.random() < 0.8 else rng.choice(ANSWERS)
    return (
        f"Global analysis: {' '.join(rng.choice(WORDS[:10]) for _ in range(6))}\n"
        "Verification loop:\n" + "\n".join(steps) + "\n"
        f"Final conclusion: Combined {concl} indicate {answer}.\n"
        f"<answer> {answer} </answer>"
    )


def mutate(rng: random.Random, text: str) -> str:
    """Apply 1-3 random corruptions."""
    for _ in range(rng.randint(1, 3)):
        n = len(text)
        op = rng.randrange(9)
        i = rng.randint(0, n)
        j = min(n, i + rng.randint(1, 40))
        if op == 0:  # deletion
            text = text[:i] + text[j:]
        elif op == 1:  # duplication
            text = text[:j] + text[i:j] + text[j:]
        elif op == 2:  # tag corruption / insertion
            text = text[:i] + rng.choice(TAGS) + text[i:]
        elif op == 3:  # truncation
            text = text[:i]
        elif op == 4:  # number corruption
            digits = [k for k, c in enumerate(text) if c.isdigit()]
            if digits:
                k = rng.choice(digits)
                e = k
                while e < n and text[e].isdigit():
                    e += 1
                text = text[:k] + rng.choice(NUMBERS) + text[e:]
        elif op == 5:  # unicode
            text = text[:i] + rng.choice(UNICODE) + text[i:]
        elif op == 6:  # case / newline changes
            seg = text[i:j]
            text = text[:i] + (seg.upper() if rng.random() < 0.5 else seg.lower()) + text[j:]
            if rng.random() < 0.3:
                text = text.replace("\n", "\r\n")
        elif op == 7:  # remove a whole keyword
            kw = rng.choice(TAGS[:7])
            text = text.replace(kw, "", 1)
        else:  # swap two lines
            lines = text.split("\n")
            if len(lines) > 1:
                a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
                lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


def random_text(rng: random.Random) -> str:
    pieces = TAGS + WORDS + NUMBERS + UNICODE + ("\n", " ", "happiness", "AU6", "-", ">", "<")
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))


def corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` completions: ~10% valid traces, ~75% mutated traces, ~15% random text."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.10:
            out.append(valid_trace(rng))
        elif r < 0.85:
            out.append(mutate(rng, valid_trace(rng)))
        else:
            out.append(random_text(rng))
    return out


def missing_part(text: str) -> str | None:
    """An independent check: a required part that is plainly absent, or None."""
    low = text.lower()
    for kw in ("global analysis:", "verification loop:", "final conclusion:", "<bbox>"):
        if kw not in low:
            return kw
    if low.count("<answer>") != 1:
        return "<answer> (count)"
    if low.count("</answer>") != 1:
        return "</answer> (count)"
    if low.find("</answer>") < low.find("<answer>"):
        return "</answer> before <answer>"
    return None


def assert_batch_agrees(texts: list[str], pb: ParsedBatch, labels=None) -> None:
    """``parse_batch`` == ``parse_trace`` on every field, row by row (first mismatch shown)."""
    B, K = pb.pred_au.shape
    exp_au = np.full((B, K), -1, dtype=np.int32)
    exp_box = np.zeros((B, K, 4), dtype=np.float32)
    exp_n = np.zeros(B, dtype=np.int32)
    exp_ans = np.zeros(B, dtype=np.int32)
    exp_ok = np.zeros(B, dtype=bool)
    exp_reason = np.zeros(B, dtype=np.int32)
    exp_mask = np.zeros(B, dtype=np.int32)
    for i, t in enumerate(texts):
        pt = parse_trace(t, labels=labels)
        pairs = pt.pairs()[:K]
        exp_n[i] = len(pairs)
        for k, (au, box) in enumerate(pairs):
            exp_au[i, k] = au
            exp_box[i, k] = np.asarray(box, dtype=np.float64).astype(np.float32)
        exp_ans[i] = pt.answer_id
        exp_ok[i] = pt.format_ok
        exp_reason[i] = int(pt.reason)
        exp_mask[i] = pt.reason_mask
    got = {
        "n_pairs": (np.asarray(pb.n_pairs), exp_n),
        "pred_au": (np.asarray(pb.pred_au), exp_au),
        "pred_boxes": (np.asarray(pb.pred_boxes), exp_box),
        "answer_id": (np.asarray(pb.answer_id), exp_ans),
        "format_ok": (np.asarray(pb.format_ok), exp_ok),
        "reason": (np.asarray(pb.reason), exp_reason),
        "reason_mask": (np.asarray(pb.reason_mask), exp_mask),
    }
    for name, (g, e) in got.items():
        assert g.shape == e.shape, (name, g.shape, e.shape)
        bad = np.nonzero((g != e).reshape(B, -1).any(axis=1))[0]
        if bad.size:
            r = int(bad[0])
            raise AssertionError(
                f"{name} differs on row {r} ({bad.size} rows): batch={g[r].tolist()!r} "
                f"trace={e[r].tolist()!r}\ntext={texts[r]!r}\n"
                f"errors={[str(x) for x in parse_trace(texts[r], labels=labels).errors]}"
            )
