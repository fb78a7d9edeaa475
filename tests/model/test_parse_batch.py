"""parse_batch: token-id inputs (NumPy, torch, CUDA/Triton), label tables, padding."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# Triton kernels read TRITON_INTERPRET when they are defined: set it before importing them.
CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tag_model.grounding import (  # noqa: E402
    ParseReason,
    TokenBytes,
    label_table,
    parse_batch,
    parse_trace,
    token_bytes,
)

from ._grounding_corpus import assert_batch_agrees  # noqa: E402
from ._grounding_corpus import corpus as _corpus  # noqa: E402


def corpus(n: int, seed: int) -> list[str]:
    """The fuzz corpus without lone surrogates (tokenizers cannot encode them)."""
    return [t.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for t in _corpus(n, seed)]


SHORT = [
    "Global analysis: g\nVerification loop:\nInspect a → b → AU6 au 12 <bbox>[1,2.5,30,40]</bbox>\n"
    "Final conclusion: AU6\n<answer>happy</answer>",
    "Global analysis: g\nVerification loop:\nInspect a -> b -> AU99 <bbox>[30,2,1,40]</bbox>\n"
    "Final conclusion: x\n<answer> Joyful </answer>",
    "Global analysis: g\nVerification loop:\nInspect a → b → <bbox>[-1,2,3,4]</bbox>\n"
    "Final conclusion: AU1234\n<answer><answer>fear</answer>",
    "Verification loop:\nInspect é → b → AU4 <bbox>[nan,1,2,3]</bbox>\n<answer>sad</answer>",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained offline on the fuzz corpus, with special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(300, seed=7), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>")


def _ids(tokenizer, texts: list[str], pad_left: bool = False) -> np.ndarray:
    enc = [[*tokenizer.encode(t, add_special_tokens=False), tokenizer.eos_token_id] for t in texts]
    T = max(len(e) for e in enc)
    out = np.full((len(texts), T), tokenizer.pad_token_id, dtype=np.int64)
    for i, e in enumerate(enc):
        if pad_left:
            out[i, T - len(e) :] = e
        else:
            out[i, : len(e)] = e
    return out


def test_token_bytes_decode_matches_tokenizer(tokenizer) -> None:
    tb = token_bytes(tokenizer)
    texts = [*SHORT, "é→日本😀 \u2028"]
    ids = _ids(tokenizer, texts)
    for row, t in zip(ids, texts):
        assert tb.decode(row) == t
        assert tb.decode(row) == tokenizer.decode(
            row, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
    assert (
        tb.data[tb.offsets[tokenizer.pad_token_id] : tb.offsets[tokenizer.pad_token_id + 1]].size
        == 0
    )


@pytest.mark.parametrize("kind", ["numpy", "torch", "list", "table"])
def test_token_ids_agree_with_text(tokenizer, kind: str) -> None:
    texts = corpus(300, seed=3) + SHORT
    ids = _ids(tokenizer, texts, pad_left=kind == "torch")
    tb = token_bytes(tokenizer)
    decoded = [tb.decode(r) for r in ids]
    assert decoded == texts
    arg = {"numpy": ids, "torch": torch.from_numpy(ids), "list": ids.tolist(), "table": ids}[kind]
    tok = tb if kind == "table" else tokenizer
    pb = parse_batch(arg, tokenizer=tok, pad_id=tokenizer.pad_token_id)
    assert_batch_agrees(texts, pb)


def test_lengths_cut_rows(tokenizer) -> None:
    ids = _ids(tokenizer, SHORT[:1] * 2)
    n = int((ids[0] != tokenizer.pad_token_id).sum())
    pb = parse_batch(ids, tokenizer=tokenizer, lengths=[n, n - 4])
    assert pb.format_ok.tolist() == [True, False]
    assert pb.reason[1] == ParseReason.UNCLOSED_ANSWER


def test_torch_gather_matches_numba_gather(tokenizer) -> None:
    from tag_model.grounding._batch import _pack_tokens
    from tag_model.grounding._triton import pack_tokens_torch

    texts = corpus(50, seed=9)
    ids = _ids(tokenizer, texts)
    tb = token_bytes(tokenizer)
    buf, off, _ = _pack_tokens(ids, tb, tokenizer.pad_token_id, None)
    tbuf, toff = pack_tokens_torch(torch.from_numpy(ids), tb, tokenizer.pad_token_id, None)
    assert np.array_equal(toff.numpy(), off)
    assert np.array_equal(tbuf.numpy(), buf)
    assert buf.tobytes().decode("utf-8") == "".join(texts)


def test_empty_and_invalid_inputs(tokenizer) -> None:
    pb = parse_batch([])
    assert pb.pred_au.shape == (0, 64) and pb.pred_boxes.shape == (0, 64, 4)
    with pytest.raises(ValueError, match="max_pairs"):
        parse_batch(["x"], max_pairs=0)
    with pytest.raises(ValueError, match="tokenizer"):
        parse_batch(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        parse_batch(np.zeros((2, 3, 4), dtype=np.int64), tokenizer=tokenizer)
    # ids outside the vocabulary are skipped, never an error
    pb = parse_batch(np.array([[-5, 10**9]]), tokenizer=tokenizer)
    assert pb.reason.tolist() == [ParseReason.MISSING_GLOBAL_ANALYSIS]


def test_label_table_is_only_an_accelerator() -> None:
    """Answers the compiled key table does not know are resolved exactly as parse_trace does."""
    tab = label_table(None)
    assert b"happiness" in {bytes(k[:n]) for k, n in zip(tab.keys, tab.key_len)}
    texts = [
        SHORT[0].replace("happy", a) for a in ("HAPPY", " happy\t", "Joyful", "ｈａｐｐｙ", "é", "")
    ]
    assert_batch_agrees(texts, parse_batch(texts))


# Rows that stress the merged line walk of the Numba scanner: tags inside step lines, the body
# ending mid-line, arrows and tags cut by the row end (the next row must not complete them).
WALK_EDGES = [
    "Global analysis: g\nVerification loop:\nInspect a → b → AU6 </answer> <bbox>[1,2,3,4]</bbox>\n"
    "Final conclusion: AU6\n<answer>happy</answer>",
    "Global analysis: g\nVerification loop:\nInspect a → b → AU6 <answer>happy</answer> <bbox>[1,2,3,4]"
    "</bbox>\nFinal conclusion: AU6",
    "Global analysis: g\nVerification loop:\nInspect a → b → AU6 <bbox>[1,2,3,4]</bbox> AU7 <bbox>x"
    "</bbox>\nFinal conclusion: AU6\n<answer>happy</answer>",
    "Global analysis: g\nVerification loop:\nInspect a → b → <bbox><bbox>[1,2,3,4]</bbox>\n"
    "Final conclusion: AU6\n<answer>happy</answer>",
    "Global analysis: g\nVerification loop:\nInspect a -> b - > c --> AU 6 <BBOX>[ 1 , 2 , 3 , 4 ]"
    "</BBox>\nFinal conclusion: au6\n<ANSWER>happy</answer></answer>",
    "  Global analysis:\n\t \nVerification loop: Inspect a → b → AU6 <bbox>[1,2,3,4]</bbox>\n"
    "Final conclusion:   \n<answer>happy",
    "</answer>Global analysis: g\nVerification loop:\nInspect a → b → AU6 <bbox>[1,2,3,4]</bbox>\n"
    "Final conclusion: AU6 <answer>happy</answer>",
    # U+00E2 U+0086 U+0092 are the UTF-8 bytes of '→' taken as code points: not an arrow
    "Global analysis: g\nVerification loop:\nInspect a \u00e2\u0086\u0092 b → AU6 <bbox>[1,2,3,4]"
    "</bbox>\nFinal conclusion: AU6\n<answer>happy</answer>",
    "Global analysis: g 😀\nVerification loop:\nInspect 😀 → \ud800 → AU6 <bbox>[1,2,3,4]</bbox>\n"
    "Final conclusion: AU6\n<answer>happy</answer>",
    "Global analysis: g\nVerification loop:\nInspect a → b → AU6 <bbox>[1,2,3,4]</bbox>\n"
    "Final conclusion: AU6\n<answer>\ud800</answer>",
    "Global analysis: g\nVerification loop:\nInspect a → b → AU12 <bbox>[1,2,3,4]</bbox>\n"
    "Final conclusion: AU12\n<answer> ｈａｐｐｙ </answer>",
    "Verification loop:\nInspect a -",
    ">> b → AU6 <bbox>[1,2,3,4]</bbox>\nFinal conclusion: AU6 AU",
    "12\n<answer>happy</answer><",
    "answer>",
    "Global analysis: g\nVerification loop:\nInspect a → b → AU6 <bbox>[1,2,3,4]</bbox>\n\x00",
    "",
    "\x00\x00",
]


def test_code_point_and_utf8_buffers_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_batch scans strings as code points; the UTF-8 byte buffer (token ids, Triton) and
    the code-point buffer give parse_trace's results, row for row."""
    from tag_model.grounding._batch import _pack_codepoints, _pack_strings, scan_packed

    texts = _corpus(400, seed=21) + WALK_EDGES + SHORT
    assert_batch_agrees(texts, parse_batch(texts))
    buf8, off8, errs = _pack_strings(texts)
    buf32, off32 = _pack_codepoints(texts)
    assert buf8.dtype == np.uint8 and buf32.dtype == np.uint32
    joined = "".join(texts)
    assert buf32.tolist() == [ord(c) for c in joined]  # trailing NULs, surrogates, non-BMP kept
    assert np.array_equal(np.diff(off32), [len(t) for t in texts])
    for buf, off in ((buf8, off8), (buf32, off32)):
        assert_batch_agrees(texts, scan_packed(buf, off, label_table(None), 64, errs))
    ascii_rows = [t for t in texts if t.isascii()]
    buf_a, off_a = _pack_codepoints(ascii_rows)
    assert buf_a.dtype == np.uint8 and buf_a.tobytes() == "".join(ascii_rows).encode()
    assert_batch_agrees(ascii_rows, scan_packed(buf_a, off_a, label_table(None), 64, errs))
    from tag_model.grounding import _batch

    with monkeypatch.context() as mp:  # very long batches pack as UTF-8 bytes
        mp.setattr(_batch, "_MAX_UCS4", 10)
        buf_u, off_u = _pack_codepoints(texts)
        assert np.array_equal(buf_u, buf8) and np.array_equal(off_u, off8)
        assert_batch_agrees(texts, parse_batch(texts))
    assert _pack_codepoints([])[0].shape == (0,) and _pack_codepoints(["", ""])[1].tolist() == [
        0,
        0,
        0,
    ]
    # the edge rows really exercise distinct outcomes
    masks = parse_batch(WALK_EDGES).reason_mask.tolist()
    seen = {r.name for r in ParseReason for m in masks if m >> int(r) & 1}
    want = {"MALFORMED_STEP", "DUPLICATE_ANSWER", "EXTRA_BBOX", "BAD_BOX", "ANSWER_NOT_IN_LABELS"}
    assert want <= seen and 0 in masks


def test_rows_never_read_their_neighbours() -> None:
    """A pattern cut by the row end is not completed by the next row's first bytes."""
    pairs = [("Verification loop:\nInspect a -", ">"), ("x <ans", "wer>happy</answer>")]
    for a, b in pairs:
        alone = parse_batch([a, b])
        for r, t in enumerate((a, b)):
            assert alone.reason_mask[r] == parse_trace(t).reason_mask


def _triton_parse(texts: list[str], max_pairs: int = 64):
    from tag_model.grounding._batch import _pack_strings
    from tag_model.grounding._triton import finish_on_device, scan_packed_triton

    dev = "cuda" if CUDA else "cpu"
    buf, off, errs = _pack_strings(texts)
    tbuf = torch.from_numpy(buf.copy()).to(dev)
    out, span = scan_packed_triton(
        tbuf, torch.from_numpy(off).to(dev), label_table(None), max_pairs
    )
    pb = finish_on_device(tbuf, out, span, label_table(None), errs)
    for k in (
        "pred_au",
        "pred_boxes",
        "n_pairs",
        "answer_id",
        "format_ok",
        "reason",
        "reason_mask",
    ):
        setattr(pb, k, getattr(pb, k).cpu().numpy())
    return pb


def test_triton_kernel_agrees_on_short_traces() -> None:
    """The Triton scanner (interpreter without a GPU) on a few short, varied rows."""
    pb = _triton_parse(SHORT, max_pairs=3)
    assert_batch_agrees(SHORT, pb)
    assert [ParseReason(r).name for r in pb.reason] == [
        "OK", "INVERTED_BOX", "NESTED_ANSWER", "MISSING_GLOBAL_ANALYSIS", "MISSING_GLOBAL_ANALYSIS",
    ]  # fmt: skip
    assert pb.pred_au[0].tolist() == [6, 12, -1]
    assert pb.pred_boxes[0, 0].tolist() == [1.0, 2.5, 30.0, 40.0]
    assert pb.pred_au[2].tolist() == [0, -1, -1]


@pytest.mark.slow
def test_triton_kernel_agrees_on_fuzz_corpus() -> None:
    texts = corpus(2000 if CUDA else 60, seed=11)
    if not CUDA:
        texts = [t[:200] for t in texts]
    assert_batch_agrees(texts, _triton_parse(texts))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_token_ids_stay_on_device(tokenizer) -> None:
    texts = corpus(512, seed=5)
    ids = torch.from_numpy(_ids(tokenizer, texts)).cuda()
    pb = parse_batch(ids, tokenizer=tokenizer)
    assert pb.pred_boxes.is_cuda and pb.reason.is_cuda
    cpu = parse_batch(ids.cpu(), tokenizer=tokenizer)
    for k in (
        "pred_au",
        "pred_boxes",
        "n_pairs",
        "answer_id",
        "format_ok",
        "reason",
        "reason_mask",
    ):
        assert np.array_equal(getattr(pb, k).cpu().numpy(), getattr(cpu, k)), k


def test_parse_trace_agrees_with_itself_on_decoded_tokens(tokenizer) -> None:
    """The documented reference for token ids: parse_trace(token_bytes(tok).decode(ids))."""
    texts = ["x\xff", SHORT[0]]
    ids = _ids(tokenizer, texts)
    tb: TokenBytes = token_bytes(tokenizer)
    assert [parse_trace(tb.decode(r)).format_ok for r in ids] == [False, True]


def test_triton_kernel_lowers_to_cubin() -> None:
    """The parser kernel compiles to real sm_80 / sm_90 machine code on a machine without a GPU
    (in a subprocess without TRITON_INTERPRET, under which kernels are not JIT functions)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from tag_model.grounding._triton import aot_compile_specs
        for fn, sig, cx in aot_compile_specs():
            for cap in (80, 90):
                k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx),
                                   target=GPUTarget("cuda", cap, 32))
                print(cap, k.asm["cubin"][:4] == b"\\x7fELF", len(k.asm["cubin"]))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln.split() for ln in proc.stdout.strip().splitlines()]
    assert [ln[:2] for ln in lines] == [["80", "True"], ["90", "True"]]
    assert all(int(ln[2]) > 10_000 for ln in lines)
