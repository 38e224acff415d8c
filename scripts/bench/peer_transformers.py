#!/usr/bin/env python3
"""Peer measurement for `lcross bench --peer PYTHON`: transformers + torch, f32, CPU.

Usage: peer_transformers.py MODEL_ID PROMPT_TOKENS DECODE_TOKENS REPEAT
Prints one JSON row (same fields as lcross's) on its last line.
"""
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

mid, n_prompt, n_decode, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = Path(os.environ.get("LCROSS_MODELS", Path.home() / ".cache/lcross/models"))
t0 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(d, gguf_file=f"{mid}.gguf")
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f"{mid}.gguf", dtype=torch.float32).eval()
load = time.perf_counter() - t0
text = ("The history of science is the study of how people came to understand the natural world, "
        "from early astronomy and medicine to modern physics and biology. ")
ids = tok(text)["input_ids"]
unit = tok(text, add_special_tokens=False)["input_ids"]
while len(ids) < n_prompt:
    ids += unit
ids = torch.tensor([ids[:n_prompt]])
prefill, decode = [], []
with torch.inference_mode():
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill.append(n_prompt / (time.perf_counter() - t))
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for _ in range(n_decode):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        decode.append(n_decode / (time.perf_counter() - t))
print(json.dumps({
    "engine": f"transformers {__import__('transformers').__version__} (torch {torch.__version__}, {torch.get_num_threads()} threads)",
    "model": mid, "mode": "f32", "load_seconds": load,
    "prefill_tokens_per_second": statistics.median(prefill),
    "decode_tokens_per_second": statistics.median(decode),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
