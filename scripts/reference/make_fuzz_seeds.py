#!/usr/bin/env python3
"""Seed corpora of the fuzz targets (crates/lcross-fuzz/corpus/<target>/): small valid and
near-valid inputs the fuzzer mutates. Everything here is lcross's own: the tiny fixtures'
configs, a shrunken tiny GGUF, artifacts made by `lcross` from the tiny checkpoint, and
hand-written dataset lines, experiment files and request bodies (no public dataset text).

    /opt/refenv/bin/python scripts/reference/make_fuzz_seeds.py --lcross target/release/lcross

Needs the `gguf` package (pip install gguf numpy) and a built `lcross`.
"""
import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "crates/lcross-fuzz/corpus"
FIXTURES = ROOT / "crates/lcross-model/tests/fixtures"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def small_gguf(path, dtype):
    """tiny-llama's tokenizer with a 1-block, 8-wide model: a whole valid GGUF in ~30 KB."""
    from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType

    src = GGUFReader(str(FIXTURES / "gguf/tiny-llama.gguf"))
    w = GGUFWriter(str(path), "llama")
    hidden, ffn, heads, kv, head_dim, vocab = 8, 16, 2, 1, 4, 384
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    f = src.fields
    w.add_token_list([bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data])
    w.add_token_types([int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data])
    w.add_token_merges([bytes(f["tokenizer.ggml.merges"].parts[i]).decode() for i in f["tokenizer.ggml.merges"].data])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(0)
    np_dtype = np.float16 if dtype == "f16" else np.float32

    def t(name, *shape, norm=False):
        a = np.ones(shape, np.float32) if norm else rng.normal(0, 0.2, shape).astype(np.float32)
        w.add_tensor(name, a.astype(np_dtype) if len(shape) > 1 else a)

    t("token_embd.weight", vocab, hidden)
    t("output.weight", vocab, hidden)
    t("output_norm.weight", hidden, norm=True)
    t("blk.0.attn_norm.weight", hidden, norm=True)
    t("blk.0.ffn_norm.weight", hidden, norm=True)
    t("blk.0.attn_q.weight", heads * head_dim, hidden)
    t("blk.0.attn_k.weight", kv * head_dim, hidden)
    t("blk.0.attn_v.weight", kv * head_dim, hidden)
    t("blk.0.attn_output.weight", hidden, heads * head_dim)
    t("blk.0.ffn_gate.weight", ffn, hidden)
    t("blk.0.ffn_up.weight", ffn, hidden)
    t("blk.0.ffn_down.weight", hidden, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lcross", default=str(ROOT / "target/release/lcross"))
    a = ap.parse_args()
    shutil.rmtree(CORPUS, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp())

    for dtype in ["f32", "f16"]:
        small_gguf(tmp / f"{dtype}.gguf", dtype)
        subprocess.run([a.lcross, "tokenize", "-m", str(tmp / f"{dtype}.gguf"), "hello"], check=True, capture_output=True)
        put("gguf", f"llama-8-{dtype}.gguf", (tmp / f"{dtype}.gguf").read_bytes())

    for d in sorted((FIXTURES / "hf").iterdir()):
        put("hf_config", f"{d.name}.json", (d / "config.json").read_bytes())

    tiny = str(FIXTURES / "hf/tiny-llama")
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"positive": f"a bright day number {i}", "negative": f"a grey day number {i}"}) + "\n" for i in range(8)))
    env = {"LCROSS_CACHE": str(tmp / "cache"), "PATH": "/usr/bin:/bin"}
    vec = tmp / "v.safetensors"
    subprocess.run([a.lcross, "extract", "-m", tiny, "-d", str(pairs), "--raw", "-l", "1", "-o", str(vec)], check=True, env=env, capture_output=True)
    put("artifact", "vector.safetensors", vec.read_bytes())
    tmap = tmp / "t.safetensors"
    corpus = tmp / "corpus.txt"
    corpus.write_text("".join(f"line {i} of a small corpus\n" for i in range(24)))
    subprocess.run([a.lcross, "align", "--source", tiny, "--target", tiny, "--source-layer", "1", "--target-layer", "2", "--corpus", str(corpus), "-o", str(tmap)],
                   check=True, env=env, capture_output=True)
    put("artifact", "map.safetensors", tmap.read_bytes())
    for est, name in [("affine", "map-affine.safetensors"), ("mlp:8", "map-mlp.safetensors")]:
        out = tmp / name
        subprocess.run([a.lcross, "align", "--source", tiny, "--target", tiny, "--source-layer", "1", "--target-layer", "2", "--corpus", str(corpus),
                        "--estimator", est, "-o", str(out)], check=True, env=env, capture_output=True)
        put("artifact", name, out.read_bytes())

    caa = [{"question": f"Is the glass half full? {i}\n\nChoices:\n (A) Yes\n (B) No", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"} for i in range(3)]
    put("dataset", "caa.json", json.dumps(caa))
    put("dataset", "pairs.json", json.dumps([{"positive": "It will work out.", "negative": "It will fail."}, {"positive": "Good news.", "negative": "Bad news."}]))
    put("dataset", "pairs.jsonl", pairs.read_text())
    put("dataset", "list.txt", "I found a coin.\nMy friend called.\n")
    put("dataset", "list.json", json.dumps(["I found a coin.", "My friend called."]))
    put("dataset", "open-ended.json", json.dumps([{"question": "How was your day?"}]))

    put("experiment", "paper-local.toml", (ROOT / "experiments/paper-local.toml").read_text())
    put("experiment", "small.toml", """name = "small"
targets = ["qwen2.5-coder-0.5b-instruct"]
sources = ["smollm2-135m-instruct"]
concepts = ["refusal"]
conditions = ["none", "self", "lcross"]
betas = [4.0, -4.0]
evaluations = ["ab"]

[profiles.tiny]
pairs = 8
items = 4
""")

    bodies = {
        "chat.json": {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "temperature": 0},
        "chat-steered.json": {"model": "tiny", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                              "steering": [{"vector": "push", "beta": 2.5}], "max_tokens": 2, "logprobs": True, "top_logprobs": 2},
        "chat-stream.json": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {"include_usage": True},
                             "stop": ["x"], "seed": 3, "temperature": 0.7, "top_p": 0.9, "max_tokens": 2},
        "completion.json": {"model": "tiny", "prompt": "once upon", "max_tokens": 2, "steering": [{"vector": "push", "beta": "auto"}]},
        "completion-list.json": {"model": "tiny", "prompt": ["a", "b"], "max_tokens": 1, "n": 1, "echo": False},
    }
    for name, b in bodies.items():
        put("request", name, json.dumps(b))
    shutil.rmtree(tmp)
    for d in sorted(CORPUS.iterdir()):
        print(d.name, len(list(d.iterdir())), "files", sum(f.stat().st_size for f in d.iterdir()), "bytes")


if __name__ == "__main__":
    main()
