#!/usr/bin/env python3
"""The Python peer of `lcross bench --workload`: the same work with transformers (f32,
CPU, the same GGUF dequantized), steering by a forward hook that adds the vector to the
output of decoder layer LAYER (resid_post(LAYER), CAA style, every position).

Usage: peer_workloads.py MODEL LAYER WORKLOAD MODE ITEMS NEW_TOKENS
  WORKLOAD: extract | ab | generate | decode
  MODE: single (one sequence at a time, as CAA's and RepE's scripts do)
        batched (left padding, batch 16, as a competent user does)
        llamacpp (decode only: llama-cpp-python on the quantized GGUF, control vector)
Prints one JSON row (the fields of lcross's) on its last line. Run by
scripts/bench/peers.py; needs torch, transformers, gguf (never installed by CI).
"""
import json
import math
import os
import sys
import time
from pathlib import Path

mid, layer, workload, mode, items, new_tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])

if mode == "llamacpp":
    # llama.cpp (llama-cpp-python) on the GGUF as it is (quantized), 2 threads, the same
    # vector as a control vector on the output of block LAYER, single-stream decode.
    import ctypes

    import llama_cpp

    models_dir = Path(os.environ.get("LCROSS_MODELS", Path.home() / ".cache/lcross/models"))
    data_dir = Path(os.environ.get("LCROSS_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "caa" / "refusal"
    llm = llama_cpp.Llama(model_path=str(models_dir / f"{mid}.gguf"), n_threads=2, n_ctx=1024, verbose=False)
    n_embd, n_layer = llm.n_embd(), llama_cpp.llama_model_n_layer(llm.model) if hasattr(llama_cpp, "llama_model_n_layer") else llama_cpp.llama_n_layer(llm.model)
    v = [((i * 7919 % 1000) / 500.0) - 1.0 for i in range(n_embd)]
    norm = math.sqrt(sum(x * x for x in v))
    buf = [0.0] * (n_embd * n_layer)
    # Layer il's vector sits at (il - 1) * n_embd (llama.cpp skips layer 0).
    buf[(layer - 1) * n_embd:layer * n_embd] = [4.0 * x / norm for x in v]
    arr = (ctypes.c_float * len(buf))(*buf)
    apply = getattr(llama_cpp, "llama_set_adapter_cvec", None) or getattr(llama_cpp, "llama_apply_adapter_cvec", None) or getattr(llama_cpp, "llama_control_vector_apply", None)
    steered = apply is not None and apply(llm.ctx, arr, len(buf), n_embd, 1, n_layer) == 0
    q = json.load(open(data_dir / "test_dataset_open_ended.json"))[0]["question"]
    prompt = llm.tokenize(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n".encode(), add_bos=False, special=True)
    llm.eval(prompt)
    tok = llm.sample(top_k=1, temp=0.0)
    t0 = time.perf_counter()
    for _ in range(new_tokens - 1):
        llm.eval([tok])
        tok = llm.sample(top_k=1, temp=0.0)
    secs = time.perf_counter() - t0
    print(json.dumps({
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, 2 threads, {'control vector' if steered else 'no control vector'})",
        "workload": workload, "model": mid, "layer": layer, "items": items,
        "seconds": secs, "per_second": (new_tokens - 1) / secs, "unit": "new tokens",
    }))
    sys.exit(0)

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

BATCH = 16
AB_BETAS = [-2.0, -1.0, 0.0, 1.0, 2.0]
models = Path(os.environ.get("LCROSS_MODELS", Path.home() / ".cache/lcross/models"))
data = Path(os.environ.get("LCROSS_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "caa" / "refusal"

tok = AutoTokenizer.from_pretrained(models, gguf_file=f"{mid}.gguf")
model = AutoModelForCausalLM.from_pretrained(models, gguf_file=f"{mid}.gguf", dtype=torch.float32).eval()
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
hidden = model.config.hidden_size


def bench_vector(h):
    """The same vector as lcross's `bench_vector`: a pattern scaled to norm 4."""
    v = [((i * 7919 % 1000) / 500.0) - 1.0 for i in range(h)]
    n = math.sqrt(sum(x * x for x in v))
    return torch.tensor([4.0 * x / n for x in v], dtype=torch.float32)


VEC = bench_vector(hidden)
# Per-row multipliers of the steering hook: shape (rows,), set before each forward.
state = {"betas": None}


def hook(_module, _inputs, output):
    if state["betas"] is None:
        return output
    hs = output[0] if isinstance(output, tuple) else output
    hs = hs + state["betas"].view(-1, 1, 1) * VEC
    return (hs,) + tuple(output[1:]) if isinstance(output, tuple) else hs


model.model.layers[layer].register_forward_hook(hook)


def chat(q):
    return tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)


def ab_prompt(q):
    return chat(q) + "(" if tok.chat_template else f"{q}\n\nAnswer: ("


def encode(texts):
    # The rendered chat text carries its special tokens.
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=not tok.chat_template)


def chunks(xs, n):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


size = 1 if mode == "single" else BATCH
t0 = time.perf_counter()
with torch.inference_mode():
    if workload == "extract":
        pairs = json.load(open(data / "generate_dataset.json"))[:items]
        texts = []
        for p in pairs:
            for letter in (p["answer_matching_behavior"], p["answer_not_matching_behavior"]):
                texts.append(ab_prompt(p["question"]) + letter.strip()[1])
        t0 = time.perf_counter()
        state["betas"] = None
        for part in chunks(texts, size):
            enc = encode(part)
            out = model(**enc, output_hidden_states=True)
            _ = out.hidden_states[layer + 1][:, -1].clone()
        units, unit = len(pairs), "pairs"
    elif workload == "ab":
        qs = json.load(open(data / "test_dataset_ab.json"))[:items]
        rows = [(ab_prompt(q["question"]), b) for q in qs for b in AB_BETAS]
        a_id, b_id = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
        t0 = time.perf_counter()
        for part in chunks(rows, size):
            state["betas"] = torch.tensor([b for _, b in part])
            enc = encode([t for t, _ in part])
            logits = model(**enc).logits[:, -1]
            _ = torch.softmax(logits[:, [a_id, b_id]], -1)
        units, unit = len(rows), "question-betas"
    elif workload in ("generate", "decode"):
        qs = json.load(open(data / "test_dataset_open_ended.json"))
        prompts = [chat(q["question"]) for q in qs[: (1 if workload == "decode" else items)]]
        t0 = time.perf_counter()
        produced = 0
        for part in chunks(prompts, size):
            state["betas"] = torch.ones(len(part))
            enc = encode(part)
            if workload == "decode":
                # Time decoding only: prefill and first token first.
                out = model(**enc, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                t0 = time.perf_counter()
                for _ in range(new_tokens - 1):
                    out = model(nxt, past_key_values=past, use_cache=True)
                    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                produced += new_tokens - 1
            else:
                out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
                produced += (out.shape[1] - enc["input_ids"].shape[1]) * len(part)
        units, unit = produced, "new tokens"
    else:
        sys.exit(f"unknown workload {workload}")
secs = time.perf_counter() - t0
print(json.dumps({
    "engine": f"transformers {__import__('transformers').__version__} {mode} (torch {torch.__version__}, {torch.get_num_threads()} threads)",
    "workload": workload, "model": mid, "layer": layer, "items": items,
    "seconds": secs, "per_second": units / secs, "unit": unit,
}))
