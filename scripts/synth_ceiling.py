#!/usr/bin/env python3
"""How well can SynthFACS expressions be told apart from perfect perception?

    uv run python scripts/synth_ceiling.py            # the demo's faces (seed 0, variation 1)

Draws faces without rendering them (landmarks, AU intensities and labels are exact) and fits a
small MLP, seeded, on three inputs: the AU intensities, the AUs present (intensity >= 0.5) and
the 68 true landmarks. Prints each one's held-out accuracy. It is the ceiling that a model's
perception is measured against: the README's "a small MLP on the true landmarks classifies
99 % of expressions".
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="SynthFACS seed (the demo's is 0)")
    ap.add_argument("--variation", type=float, default=1.0, help="pose/lighting widening")
    ap.add_argument("--n_train", type=int, default=6000)
    ap.add_argument("--n_test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=300, help="full-batch Adam steps")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from tag_model.synth import SynthFACS
    from tag_model.synth._generator import SYNTH_AUS

    gen = SynthFACS(size=112, seed=args.seed, variation=args.variation)
    labels = list(gen.labels)
    n = args.n_train + args.n_test
    samples = [gen.sample(i, render=False) for i in range(n)]
    y = torch.tensor([labels.index(s.label) for s in samples])
    inten = torch.tensor([[s.au_intensity.get(a, 0.0) for a in SYNTH_AUS] for s in samples])
    lms = torch.from_numpy(np.stack([s.landmarks.ravel() for s in samples]))
    lms = (lms - lms.mean(0)) / lms.std(0)
    train, test = slice(0, args.n_train), slice(args.n_train, n)

    def fit(x: torch.Tensor) -> float:
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, len(labels))
        )
        opt = torch.optim.Adam(mlp.parameters(), 1e-3, weight_decay=1e-4)
        for _ in range(args.epochs):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(mlp(x[train]), y[train]).backward()
            opt.step()
        with torch.no_grad():
            return float((mlp(x[test]).argmax(1) == y[test]).float().mean())

    print(f"{len(labels)} classes, {args.n_train} train / {args.n_test} held-out faces")
    print(f"  AU intensities     -> accuracy {fit(inten.float()):.3f}")
    print(f"  AUs present (>=.5) -> accuracy {fit((inten >= 0.5).float()):.3f}")
    print(f"  true landmarks     -> accuracy {fit(lms.float()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
