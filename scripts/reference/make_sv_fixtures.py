#!/usr/bin/env python3
"""Reference steering vectors from transformers + numpy, for lcross-core's tests.

For SmolLM2-135M-Instruct (GGUF dequantized to f32 by transformers) and the first 32
pairs of CAA refusal: the texts of lcross's A/B convention (chat template of the question
with the generation prompt, then "(" and the letter), the last-token hidden state after
block 12 (hidden_states[13]), and
  - the CAA mean difference (positive - negative), and
  - the RepE direction: differences with alternating signs (pair i negated when i is
    odd), centred, first right singular vector (numpy SVD), sign so that positives
    project higher than negatives on most pairs, unit norm.
Run by hand (needs torch + transformers):
    /opt/refenv/bin/python scripts/reference/make_sv_fixtures.py
"""
import json
import os
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
MODEL = "smollm2-135m-instruct"
LAYER = 12
N = 32

d = Path(os.environ.get("LCROSS_MODELS", Path.home() / ".cache/lcross/models"))
tok = AutoTokenizer.from_pretrained(d, gguf_file=f"{MODEL}.gguf")
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f"{MODEL}.gguf", dtype=torch.float32).eval()
items = json.load(open(DATA / "caa" / "refusal" / "generate_dataset.json"))[:N]


def letter(s):
    return s.strip().lstrip("(")[0]


def state(text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[LAYER + 1][0, -1].double().numpy(), ids


pos, neg = [], []
first_ids = None
for it in items:
    prompt = tok.apply_chat_template([{"role": "user", "content": it["question"]}], tokenize=False,
                                     add_generation_prompt=True) + "("
    p, ids = state(prompt + letter(it["answer_matching_behavior"]))
    n, _ = state(prompt + letter(it["answer_not_matching_behavior"]))
    first_ids = first_ids or ids
    pos.append(p)
    neg.append(n)
pos, neg = np.array(pos), np.array(neg)
diffs = pos - neg
mean_diff = diffs.mean(axis=0)
signed = diffs * np.where(np.arange(N) % 2 == 1, -1.0, 1.0)[:, None]
centred = signed - signed.mean(axis=0)
_, _, vt = np.linalg.svd(centred, full_matrices=False)
pc = vt[0]
if (diffs @ pc > 0).sum() * 2 < N:
    pc = -pc
pc = pc / np.linalg.norm(pc)
out = {
    "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, numpy {np.__version__}, f32 states, f64 algebra",
    "model": MODEL, "layer": LAYER, "dataset": "caa/refusal/generate_dataset.json", "n_pairs": N,
    "first_positive_ids": first_ids,
    "mean_diff": [round(float(x), 6) for x in mean_diff],
    "pca": [round(float(x), 7) for x in pc],
}
(ROOT / "crates/lcross-core/tests/fixtures/sv-smollm2-refusal-l12.json").write_text(json.dumps(out))
print("mean-diff norm", np.linalg.norm(mean_diff))
