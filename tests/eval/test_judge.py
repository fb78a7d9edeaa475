"""The preference study: LLM judge over a real local HTTP server, and the human-study export."""

from __future__ import annotations

import csv
import json

import pytest
from tag_eval import EvalInputError
from tag_eval._records import load_run
from tag_eval.human_study import export_human_study, import_answers
from tag_eval.judge import (
    CRITERIA,
    JudgeClient,
    JudgeConfig,
    JudgeError,
    combine_swapped,
    compare_runs,
    pair_runs,
    parse_verdict,
    summarize_outcomes,
)
from tag_eval.metrics import wilson_ci


def test_parse_verdict_never_raises_and_normalises():
    assert parse_verdict('{"visual_faithfulness": "Response B", "logical_coherence": "Tie"}') == {
        "visual_faithfulness": "B",
        "anatomical_precision": None,
        "logical_coherence": "tie",
    }
    for junk in ["", "no json", "{broken", '["A"]', None, '{"visual_faithfulness": 3}']:
        assert set(parse_verdict(junk).values()) == {None}


def test_combine_swapped_cancels_position_bias():
    always_a = dict.fromkeys(CRITERIA, "A")
    assert set(combine_swapped(always_a, always_a).values()) == {0}
    # run A wins in both orders -> A, then B (positions swapped)
    win = combine_swapped(dict.fromkeys(CRITERIA, "A"), dict.fromkeys(CRITERIA, "B"))
    assert set(win.values()) == {1}
    loss = combine_swapped(dict.fromkeys(CRITERIA, "B"), dict.fromkeys(CRITERIA, "A"))
    assert set(loss.values()) == {-1}
    # one win plus one tie -> win; a missing verdict -> invalid
    mixed = combine_swapped(
        dict.fromkeys(CRITERIA, "A"), {**dict.fromkeys(CRITERIA, "tie"), CRITERIA[2]: None}
    )
    assert mixed == {CRITERIA[0]: 1, CRITERIA[1]: 1, CRITERIA[2]: None}


def test_summarize_outcomes_counts_and_wilson():
    outs = [dict.fromkeys(CRITERIA, v) for v in (1, 1, 1, 0, -1, None)]
    s = summarize_outcomes(outs)
    e = s["visual_faithfulness"]
    assert (e["win"], e["tie"], e["loss"], e["n"], e["invalid"]) == (3, 1, 1, 5, 1)
    assert e["win_rate"] == pytest.approx(0.6)
    assert e["win_ci"] == pytest.approx(list(wilson_ci(3, 5)))
    assert e["win_ci"][0] <= 0.6 <= e["win_ci"][1]


def test_client_talks_to_the_server_with_key_and_retries(chat_server, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-123")
    chat_server.fail_first = 2
    cfg = JudgeConfig(
        chat_server.base_url, "judge-1", api_key_env="MY_JUDGE_KEY", retries=2, backoff=0.0
    )
    with JudgeClient(cfg) as client:
        verdict, raw = client.judge(None, "AU6 AU12 happy", "AU4")
    assert verdict["visual_faithfulness"] == "A" and verdict["logical_coherence"] == "tie"
    assert "verdict" in raw
    assert len(chat_server.requests) == 3  # two 503s, then success
    req = chat_server.requests[-1]
    assert req["headers"]["Authorization"] == "Bearer sk-test-123"
    assert req["body"]["model"] == "judge-1" and req["body"]["temperature"] == 0.0
    assert req["body"]["messages"][0]["role"] == "system"


def test_client_gives_up_after_retries_and_on_401(chat_server):
    chat_server.fail_first = 10
    cfg = JudgeConfig(chat_server.base_url, "j", retries=1, backoff=0.0)
    with JudgeClient(cfg) as client, pytest.raises(JudgeError, match=r"after 2 attempts.*503"):
        client.chat([{"role": "user", "content": "hi"}])
    chat_server.fail_first = 0
    chat_server.mode = "unauthorized"
    with JudgeClient(cfg) as client, pytest.raises(JudgeError, match="HTTP 401"):
        client.chat([{"role": "user", "content": "hi"}])
    n_before = len(chat_server.requests)
    assert n_before == 2 + 1  # 401 is not retried


def test_client_timeout_is_honoured(chat_server):
    import time

    chat_server.mode = "slow"
    cfg = JudgeConfig(chat_server.base_url, "j", retries=0, timeout=0.5)
    t0 = time.perf_counter()
    with JudgeClient(cfg) as client, pytest.raises(JudgeError, match="ReadTimeout"):
        client.chat([{"role": "user", "content": "hi"}])
    assert time.perf_counter() - t0 < 2.5


def test_client_times_out_on_unreachable_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cfg = JudgeConfig(f"http://127.0.0.1:{port}/v1", "j", retries=1, backoff=0.0, timeout=2)
    with JudgeClient(cfg) as client, pytest.raises(JudgeError, match="ConnectError"):
        client.chat([{"role": "user", "content": "hi"}])


def test_compare_runs_with_content_judge(
    crafted_runs, synth_pool, chat_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("TAG_JUDGE_API_KEY", "sk-secret-do-not-log")
    a, b = crafted_runs
    cfg = JudgeConfig(chat_server.base_url, "judge", backoff=0.0)
    out = tmp_path / "cmp"
    res = compare_runs(a, b, out, judge=cfg)
    assert res["n_pairs"] == 8
    vf = res["judge"]["visual_faithfulness"]
    # the good run names every activated AU, the poor one at most one: the content judge
    # prefers run A exactly on the samples with two or more activated AUs, else ties.
    expected_wins = sum(len(p["activated"]) >= 2 for p in synth_pool)
    assert expected_wins >= 4
    assert (vf["win"], vf["tie"], vf["loss"]) == (expected_wins, 8 - expected_wins, 0)
    assert res["judge"]["logical_coherence"]["tie"] == 8
    assert len(chat_server.requests) == 16  # every pair twice
    # both orders were sent: the good trace first in one request, second in the other
    first = chat_server.requests[0]["body"]["messages"][-1]["content"]
    assert first[0]["type"] == "image_url" and first[0]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    second = chat_server.requests[1]["body"]["messages"][-1]["content"]

    def explanations(content):
        a_and_b = content[-1]["text"].split("\n\nWhich is better")[0]
        a_text, b_text = a_and_b.removeprefix("Explanation A:\n").split("\n\nExplanation B:\n")
        return a_text, b_text

    good0, poor0 = load_run(a)[1][0], load_run(b)[1][0]
    first_a, first_b = explanations(first)
    assert first_a.startswith(good0["trace"]) and first_b.startswith(poor0["trace"])
    assert explanations(second) == (first_b, first_a)
    # the key is never written anywhere
    for f in out.iterdir():
        assert "sk-secret-do-not-log" not in f.read_text()
    assert (
        json.loads((out / "compare.json").read_text())["judge_config"]["api_key_env"]
        == "TAG_JUDGE_API_KEY"
    )


def test_compare_position_biased_judge_gives_ties(crafted_runs, chat_server, tmp_path):
    chat_server.mode = "position"
    a, b = crafted_runs
    res = compare_runs(a, b, tmp_path / "cmp", judge=JudgeConfig(chat_server.base_url, "j"))
    for c in CRITERIA:
        assert res["judge"][c]["tie"] == 8


def test_compare_garbage_judge_is_invalid_not_a_crash(crafted_runs, chat_server, tmp_path):
    chat_server.mode = "garbage"
    a, b = crafted_runs
    res = compare_runs(a, b, tmp_path / "cmp", judge=JudgeConfig(chat_server.base_url, "j"))
    assert res["judge"]["visual_faithfulness"]["invalid"] == 8
    assert res["judge"]["visual_faithfulness"]["win_rate"] is None


def test_compare_resumes_from_judgments(crafted_runs, chat_server, tmp_path):
    a, b = crafted_runs
    out = tmp_path / "cmp"
    cfg = JudgeConfig(chat_server.base_url, "j")
    compare_runs(a, b, out, judge=cfg, limit=3)
    assert len(chat_server.requests) == 6
    lines = (out / "judgments.jsonl").read_text().splitlines(keepends=True)
    (out / "judgments.jsonl").write_text("".join(lines[:2]) + lines[2][:15])  # torn write
    res = compare_runs(a, b, out, judge=cfg)
    assert len(chat_server.requests) == 6 + 2 * 6  # items 3..8 judged, item 3 again
    assert res["judge"]["visual_faithfulness"]["n"] == 8
    assert len((out / "judgments.jsonl").read_text().splitlines()) == 8
    with pytest.raises(EvalInputError, match="judged by 'j', not 'other'"):
        compare_runs(a, b, out, judge=JudgeConfig(chat_server.base_url, "other"))


def test_pair_runs_rejects_mismatched_runs(crafted_runs, tmp_path):
    from .conftest import write_run

    a, _ = crafted_runs
    _, recs = load_run(a)
    other = write_run(
        tmp_path / "ferplus_run", [{**r, "label": "neutral"} for r in recs], space=("ferplus", [])
    )
    with pytest.raises(EvalInputError, match="different label spaces"):
        pair_runs(a, other)
    disjoint = write_run(tmp_path / "disjoint", [{**r, "id": "x" + r["id"]} for r in recs])
    with pytest.raises(EvalInputError, match="share no sample ids"):
        pair_runs(a, disjoint)
    with pytest.raises(EvalInputError, match="not a tag-eval run"):
        pair_runs(a, tmp_path)


def test_human_export_and_import_roundtrip(crafted_runs, tmp_path):
    a, b = crafted_runs
    _, _, pairs = pair_runs(a, b)
    out = tmp_path / "human"
    out.mkdir()
    paths = export_human_study(pairs, out, run_a=a, run_b=b, seed=1)
    page = (out / "human_study.html").read_text()
    assert page.count("<section>") == 8 and page.count("data:image/png;base64,") == 16
    assert "AU" in page and "Left" in page and "Right" in page
    key = json.loads((out / "human_key.json").read_text())
    sides = {v["left"] for v in key["items"].values()}
    assert sides == {"a", "b"}  # randomised
    # a rater who always picks the good run (A) on faithfulness, and "tie" on coherence
    with open(paths["answer_sheet"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for row in rows:
        a_left = key["items"][row["item"]]["left"] == "a"
        row.update(
            rater="r1",
            visual_faithfulness="left" if a_left else "right",
            anatomical_precision="right" if a_left else "left",
            logical_coherence="tie",
        )
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = import_answers([filled], out / "human_key.json")
    h = res["human"]
    assert h["visual_faithfulness"]["win"] == 8
    assert h["anatomical_precision"]["loss"] == 8
    assert h["logical_coherence"]["tie"] == 8
    assert res["n_judgments"] == 8


def test_import_answers_bad_value_names_file_and_line(crafted_runs, tmp_path):
    a, b = crafted_runs
    _, _, pairs = pair_runs(a, b)
    export_human_study(pairs, tmp_path, run_a=a, run_b=b)
    sheet = tmp_path / "answer_sheet.csv"
    text = sheet.read_text().splitlines()
    cols = text[0].split(",")
    vals = text[2].split(",")
    vals[cols.index("logical_coherence")] = "maybe"
    text[2] = ",".join(vals)
    sheet.write_text("\n".join(text) + "\n")
    with pytest.raises(
        EvalInputError, match=r"answer_sheet.csv:3: column 'logical_coherence' has 'maybe'"
    ):
        import_answers([sheet])
    with pytest.raises(EvalInputError, match="answer key not found"):
        import_answers([sheet], tmp_path / "nope.json")
