#!/usr/bin/env python3
"""One-sided paired sign-flip test of every condition against no modulation.

    scripts/eval/paired_test.py RESULTS/items.jsonl up|down [--rounds N]

Reads the per-item rows an `lcross eval ... --out DIR` writes (DIR/items.jsonl: one row
per (condition, prompt) with a `score`), pairs each condition's scores with the `none`
condition's on the same prompt, and tests whether the mean difference is as large as
observed in the given direction when each difference's sign is flipped at random
(Monte Carlo with a fixed seed; p = (hits + 1) / (rounds + 1)). Standard library only.
"""
import argparse
import json
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("items")
    ap.add_argument("direction", choices=["up", "down"])
    ap.add_argument("--rounds", type=int, default=200_000)
    a = ap.parse_args()
    # (condition, beta) -> prompt -> score: one vector at several betas gives several rows.
    scores = {}
    with open(a.items) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                key = row.get("prompt", row.get("question"))
                score = float(row["score"])
                cond = (row["condition"], float(row.get("beta", 0.0)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise SystemExit(f"{a.items}:{n}: not an item row with condition, prompt and score ({e!r})")
            scores.setdefault(cond, {})[key] = score
    nones = [c for c in scores if c[0] == "none"]
    if not nones:
        raise SystemExit(f"{a.items}: no rows of condition `none` to pair with")
    baseline = scores[nones[0]]
    sign = 1 if a.direction == "up" else -1
    rng = random.Random(0)
    for (condition, beta), by_prompt in scores.items():
        if condition == "none":
            continue
        diffs = [by_prompt[k] - v for k, v in baseline.items() if k in by_prompt]
        if not diffs:
            continue
        observed = sign * sum(diffs)
        hits = sum(1 for _ in range(a.rounds) if sign * sum(d if rng.random() < 0.5 else -d for d in diffs) >= observed - 1e-12)
        print(f"{condition}\tbeta {beta:g}\tn {len(diffs)}\tmean diff {sum(diffs) / len(diffs):+.4f}\tp {(hits + 1) / (a.rounds + 1):.2g}")

if __name__ == "__main__":
    main()
