#!/usr/bin/env python3
"""Reference linear maps from numpy, for lcross-core's map tests.

1. Real paired states: SmolLM2-135M layer 12 and Qwen2.5-Coder-0.5B layer 10 (transformers,
   GGUF dequantized to f32) of the texts of the first 8 CAA refusal pairs (lcross's A/B
   convention), T = pinv(X) @ Y (numpy), and the transferred mean-difference vector.
2. Synthetic overdetermined data (n = 60 > d = 20) with numpy's seeded generator:
   OLS (pinv), ridge (lambda = 1) and orthogonal Procrustes references.
Run by hand:  /opt/refenv/bin/python scripts/reference/make_map_fixtures.py
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
d = Path(os.environ.get("LCROSS_MODELS", Path.home() / ".cache/lcross/models"))
items = json.load(open(DATA / "caa" / "refusal" / "generate_dataset.json"))[:8]


def letter(s):
    return s.strip().lstrip("(")[0]


def states(mid, layer):
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f"{mid}.gguf")
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f"{mid}.gguf", dtype=torch.float32).eval()
    rows = []
    for it in items:
        prompt = tok.apply_chat_template([{"role": "user", "content": it["question"]}], tokenize=False,
                                         add_generation_prompt=True) + "("
        for ans in (it["answer_matching_behavior"], it["answer_not_matching_behavior"]):
            ids = tok(prompt + letter(ans), add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                out = model(torch.tensor([ids]), output_hidden_states=True)
            rows.append(out.hidden_states[layer + 1][0, -1].double().numpy())
    return np.array(rows)


X = states("smollm2-135m-instruct", 12)
Y = states("qwen2.5-coder-0.5b-instruct", 10)
T = np.linalg.pinv(X) @ Y
sv = (X[0::2] - X[1::2]).mean(axis=0)
rng = np.random.default_rng(7)
X2 = rng.normal(size=(60, 20))
W = rng.normal(size=(20, 15))
Y2 = X2 @ W + 0.1 * rng.normal(size=(60, 15))
T2 = np.linalg.pinv(X2) @ Y2
Tr = np.linalg.solve(X2.T @ X2 + 1.0 * np.eye(20), X2.T @ Y2)
u, _, vt = np.linalg.svd(X2.T @ Y2, full_matrices=False)
Tp = u @ vt
r = lambda a, k=7: [[round(float(x), k) for x in row] for row in a]
out = {
    "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, numpy {np.__version__}",
    "real": {"source": "smollm2-135m-instruct", "source_layer": 12, "target": "qwen2.5-coder-0.5b-instruct",
             "target_layer": 10, "n_pairs": 8, "X": r(X, 5), "Y": r(Y, 5),
             "T_row0": [round(float(x), 8) for x in T[0]], "T_frobenius": float(np.linalg.norm(T)),
             "transferred_mean_diff": [round(float(x), 7) for x in sv @ T]},
    "synthetic": {"X": r(X2), "Y": r(Y2), "ols": r(T2), "ridge_lambda_1": r(Tr), "procrustes": r(Tp)},
}
(ROOT / "crates/lcross-core/tests/fixtures/maps-reference.json").write_text(json.dumps(out))
print("T frobenius", np.linalg.norm(T))
