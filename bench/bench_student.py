"""Throughput of the distilled student against the tiny VLM's greedy trace generation, in the
same run.

* student: ``uint8[256, 112, 112, 3]`` faces -> every ``StudentOutput`` array (emotion
  probabilities, AU probabilities, region boxes, landmarks, the activated list), one jitted
  call, compiled before timing; trace rendering excluded;
* VLM: the demo's tiny Qwen2-VL (``make_tiny_vlm("qwen2_vl", image_size=112)``) generating a
  trace greedily with the demo's compact prompt, forced to ``--trace_tokens`` new tokens (the
  mean token length of the trace dataset's traces when ``--traces`` is given): the cost of one
  trace of typical length, whatever the weights (a random model would stop anywhere).

    .venv/bin/python bench/bench_student.py [--student DIR] [--traces DIR] [--threads 2]

``--student DIR`` times a trained student (``tag-train distill``); without it a freshly
initialised one of the default architecture (the weights do not change the cost). With a
trained student it also checks its boxes on a real face (:func:`astronaut_check`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _set_threads(n: int) -> None:
    """Torch's pools (set before it starts them); XLA's CPU client uses the machine's cores."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def bench_student(folder: str | None, batch: int, rounds: int) -> dict[str, float]:
    import jax
    import numpy as np
    from tag_train.student import StudentConfig, StudentPredictor, load
    from tag_train.student._model import create_student

    if folder:
        pred = load(folder)
    else:
        labels = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
        pred = StudentPredictor(create_student(StudentConfig(labels=labels)))
    size = pred.config.image_size
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8))
    wh = jax.device_put(np.full((batch, 2), size, np.float32))
    jax.block_until_ready(pred.predict_device(images, wh))  # compile
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        jax.block_until_ready(pred.predict_device(images, wh))
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "batch": batch,
        "image_size": size,
        "median_batch_seconds": med,
        "best_batch_seconds": min(times),
        "faces_per_second": batch / med,
        "seconds_per_face": med / batch,
        "params": int(sum(x.size for x in jax.tree.leaves(pred._state))),
    }


def astronaut_check(folder: str) -> dict[str, object] | None:
    """The student on a real face: ``skimage.data.astronaut()``, dlib's 68 landmarks, the face
    framed as in the student's training faces (:func:`tag_train.student.frame_face`). Checks,
    as ``tests/kernels/test_regions.py`` checks the regions of dlib's own landmarks, that the
    AU12 box holds both mouth corners and the AU6 box lies under the eyes and above the mouth.
    ``None`` when dlib, its model or skimage is missing."""
    import numpy as np
    from PIL import Image
    from tag_kernels import IBUG68_REGIONS as table
    from tag_kernels import elementwise_box_iou, landmarks_to_regions
    from tag_train.student import frame_face, load

    try:
        from skimage import data
        from tag_model.faces import detect_landmarks

        img = data.astronaut()
        found = detect_landmarks(img)
    except (ImportError, RuntimeError, FileNotFoundError) as exc:
        print(f"astronaut check skipped: {exc}")
        return None
    if found is None or getattr(found, "landmarks", None) is None:
        print("astronaut check skipped: dlib found no face")
        return None
    lm = np.asarray(found.landmarks, np.float32)
    h, w = img.shape[:2]
    ref = np.asarray(landmarks_to_regions(lm[None], np.array([[w, h]], np.float32)))[0]
    x1, y1, x2, y2 = frame_face(lm)
    out = load(folder).predict([Image.fromarray(img).crop((x1, y1, x2, y2))], traces=False)
    boxes = out.region_boxes[0] + np.array([x1, y1, x1, y1], np.float32)
    b12, b6 = boxes[table.region_of(12)], boxes[table.region_of(6)]
    corners = all(b12[0] <= lm[k, 0] <= b12[2] and b12[1] <= lm[k, 1] <= b12[3] for k in (48, 54))
    cheeks = bool(b6[1] > lm[36:48, 1].min() and b6[3] < lm[48:60, 1].min())
    iou = {
        f"AU{au}": float(elementwise_box_iou(boxes[table.region_of(au)], ref[table.region_of(au)]))
        for au in (6, 12)
    }
    return {
        "crop": [x1, y1, x2, y2],
        "emotion": out.emotion[0],
        "activated": [(a.au, round(a.prob, 3)) for a in out.activated[0]],
        "iou_with_dlib_regions": iou,
        "AU12 box holds both mouth corners": corners,
        "AU6 box under the eyes and above the mouth": cheeks,
    }


def _trace_tokens(traces: str | None, processor: object, default: int) -> int:
    if not traces:
        return default
    from datasets import load_from_disk

    tok = getattr(processor, "tokenizer", processor)
    texts = load_from_disk(traces)["trace"][:200]
    return round(statistics.mean(len(tok(t)["input_ids"]) for t in texts))


def bench_vlm(traces: str | None, n_faces: int, trace_tokens: int) -> dict[str, float]:
    import torch
    from PIL import Image
    from tag_model.backbones import generate_completions, make_tiny_vlm

    model, processor = make_tiny_vlm("qwen2_vl", seed=0, image_size=112)
    model.eval()
    tokens = _trace_tokens(traces, processor, trace_tokens)
    labels = ("happiness", "sadness", "surprise", "anger")
    images = [Image.new("RGB", (112, 112), (200, 160, 140)) for _ in range(n_faces)]
    kw = dict(family="qwen2_vl", style="compact", max_new_tokens=tokens, min_new_tokens=tokens)
    with torch.inference_mode():
        generate_completions(model, processor, images[:2], labels, **kw)  # warm-up
        t = time.perf_counter()
        generate_completions(model, processor, images, labels, **kw)
        dt = time.perf_counter() - t
    return {
        "faces": n_faces,
        "trace_tokens": tokens,
        "seconds": dt,
        "seconds_per_face": dt / n_faces,
        "faces_per_second": n_faces / dt,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default=None, help="a student folder (default: untrained)")
    p.add_argument("--traces", default=None, help="a trace dataset: the VLM's trace length")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--vlm_faces", type=int, default=16)
    p.add_argument("--trace_tokens", type=int, default=120, help="without --traces")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    _set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    student = bench_student(args.student, args.batch, args.rounds)
    print(
        f"student: {student['faces_per_second']:,.0f} faces/s "
        f"(batch {student['batch']} at {student['image_size']} px, median "
        f"{student['median_batch_seconds'] * 1e3:.0f} ms a batch, {student['params']:,} params)"
    )
    vlm = bench_vlm(args.traces, args.vlm_faces, args.trace_tokens)
    print(
        f"tiny VLM greedy trace: {vlm['seconds_per_face'] * 1e3:.0f} ms a face "
        f"({vlm['trace_tokens']} new tokens, batch {vlm['faces']})"
    )
    ratio = vlm["seconds_per_face"] / student["seconds_per_face"]
    goals = {
        "student >= 2,000 faces/s": student["faces_per_second"] >= 2000,
        "student >= 100x the VLM per face": ratio >= 100,
    }
    print(f"speed-up per face: {ratio:,.0f}x")
    real = astronaut_check(args.student) if args.student else None
    if real is not None:
        print(
            f"astronaut (dlib landmarks, face framed as in training, crop {real['crop']}): "
            f"{real['emotion']}, activated {real['activated']}, IoU with dlib's regions "
            + ", ".join(f"{k} {v:.2f}" for k, v in real["iou_with_dlib_regions"].items())  # type: ignore[union-attr]
        )
        for name in (
            "AU12 box holds both mouth corners",
            "AU6 box under the eyes and above the mouth",
        ):
            goals[f"astronaut: {name}"] = bool(real[name])
    for name, ok in goals.items():
        print(f"  [{'met ' if ok else 'MISS'}] {name}")
    try:
        load = os.getloadavg()
        print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    except OSError:
        load = None
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "student": student,
                    "vlm": vlm,
                    "speedup": ratio,
                    "astronaut": real,
                    "goals": goals,
                    "load": load,
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
