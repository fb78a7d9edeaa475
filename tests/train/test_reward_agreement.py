"""The grounding reward agrees with the traces SFT teaches: every kept template-teacher trace,
on SynthFACS faces of all seven RAF-DB classes (neutral included), scores a grounding reward of
at least 0.8 against its own activated list.

A neutral face, or any face whose detector list is empty, gets an inspection step ("Inspect the
whole face → at rest → <bbox>") that names no AU. The class-aware reward does not count such a
box as a prediction, so that trace scores ``empty_value`` rather than 0.
"""

from __future__ import annotations

import numpy as np
from datasets import load_from_disk
from tag_model.au import RAFDB
from tag_train.cli import main
from tag_train.rewards import get_grounding_reward


def test_template_traces_score_high_on_their_own_activated_lists(tmp_path):
    out = tmp_path / "traces"
    rc = main(
        [
            "traces", "--dataset", "synth", "--synth_n", "84", "--synth_size", "112",
            "--data_root", str(tmp_path / "faces"), "--label_space", "rafdb",
            "--family", "qwen2_vl", "--output_dir", str(out), "--progress", "false",
        ]
    )  # fmt: skip
    assert rc == 0
    ds = load_from_disk(str(out))
    labels = set(ds["label"])
    assert labels == set(RAFDB.names), labels  # all seven classes kept, neutral among them
    empty = [i for i, act in enumerate(ds["activated"]) if not act]
    assert empty, "no face without detected AUs: the neutral case is not exercised"
    reward = get_grounding_reward("qwen2_vl", labels=RAFDB.names)
    got = np.asarray(
        reward(list(ds["trace"]), activated=ds["activated"], image=ds["image"]), dtype=np.float64
    )
    assert np.isfinite(got).all()
    low = {ds["label"][i]: round(float(got[i]), 3) for i in np.nonzero(got < 0.8)[0]}
    assert not low, f"traces scoring < 0.8 on their own activated list: {low}"
    assert (got[empty] == 1.0).all()  # inspection boxes only, nothing detected: empty_value
