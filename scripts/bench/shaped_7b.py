#!/usr/bin/env python3
"""7B-shaped models on this CPU: lcross (--weights quantized) against llama.cpp on the same
Q4_K_M files (issue 30, item 4).

    python3 scripts/bench/shaped_7b.py [--shapes qwen2.5-7b,llama-3.1-8b] [--layers 2,4] [--repeat 3]

No 7B checkpoint fits the project's machines or licences, so the script writes random-weight
GGUF files with the widths of Qwen2.5-7B and Llama-3.1-8B and a few layers (f16, seeded),
quantizes them to Q4_K_M with llama.cpp's own `llama-quantize`, and times prefill (128-token
prompt) and decode (32 tokens) in both engines on each file, rounds alternating, medians.
Two depths give the cost of one layer (the difference) and of the rest (embedding, final
norm, output projection), and so the projection to the full 28 / 32 layers. Peak memory is
each process's maximum RSS.

Both shapes use the tokenizer of qwen2.5-coder-0.5b-instruct's GGUF (151 936 tokens; Qwen2.5-7B
has 152 064 rows, Llama-3.1-8B a 128 256-token vocabulary: the output projection of the
Llama shape is 18% larger here than in the real model, which the per-layer numbers do not
see). Needs: the qwen model (scripts/fetch-models), `cargo build --release`, and a Python
with `gguf` and `numpy` (installed into target/peers-venv when missing). llama.cpp is built
from the llama-cpp-python source release (cmake from PyPI, ~15 minutes on 2 cores) into
target/peers/llama.cpp unless --llama-cpp names a build directory with bin/llama-quantize and
bin/llama-bench. CI never runs this.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LCROSS = ROOT / "target" / "release" / "lcross"
WORK = ROOT / "target" / "shaped-7b"
PEERS = ROOT / "target" / "peers"

# Widths of the published configs (config.json of Qwen/Qwen2.5-7B and meta-llama/Llama-3.1-8B).
SHAPES = {
    "qwen2.5-7b": dict(arch="qwen2", hidden=3584, ff=18944, heads=28, kv_heads=4, layers_full=28, bias=True, theta=1e6, eps=1e-6),
    "llama-3.1-8b": dict(arch="llama", hidden=4096, ff=14336, heads=32, kv_heads=8, layers_full=32, bias=False, theta=5e5, eps=1e-5),
}
TOKENIZER_SOURCE = "qwen2.5-coder-0.5b-instruct"


def python_with_gguf() -> str:
    try:
        import gguf  # noqa: F401
        import numpy  # noqa: F401
        return sys.executable
    except ImportError:
        env = PEERS.parent / "peers-venv"
        py = env / "bin" / "python"
        if not py.exists():
            venv.create(env, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "gguf", "numpy"], check=True)
        return str(py)


def llama_cpp(given: str | None) -> Path:
    """A llama.cpp build directory with bin/llama-quantize and bin/llama-bench."""
    if given:
        return Path(given)
    build = PEERS / "llama.cpp" / "build"
    if (build / "bin" / "llama-bench").exists() and (build / "bin" / "llama-quantize").exists():
        return build
    PEERS.mkdir(parents=True, exist_ok=True)
    meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/llama-cpp-python/json"))
    sdist = next(u for u in meta["urls"] if u["packagetype"] == "sdist")
    url = urllib.parse.urljoin("https://pypi.org/pypi/llama-cpp-python/json", sdist["url"])
    archive = PEERS / sdist["filename"]
    if not archive.exists():
        urllib.request.urlretrieve(url, archive)
    with tarfile.open(archive) as t:
        t.extractall(PEERS, filter="data")
    src = next(PEERS.glob("llama_cpp_python-*/vendor/llama.cpp"))
    shutil.rmtree(PEERS / "llama.cpp", ignore_errors=True)
    shutil.copytree(src, PEERS / "llama.cpp")
    cmake = shutil.which("cmake")
    if not cmake:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cmake"], check=True)
        cmake = shutil.which("cmake") or str(Path(sys.executable).parent / "cmake")
    # As scripts/bench/peers.py: not -march=native (it segfaulted on the Intel Xeon of
    # 2026-11-28); AVX2, and AVX-512 with VNNI where the CPU has them.
    flags = ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DLLAMA_CURL=OFF",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    cpu = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    if "avx512f" in cpu:
        flags.append("-DGGML_AVX512=ON")
    if "avx512_vnni" in cpu:
        flags.append("-DGGML_AVX512_VNNI=ON")
    subprocess.run([cmake, "-S", str(PEERS / "llama.cpp"), "-B", str(build), *flags], check=True)
    subprocess.run([cmake, "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", "llama-quantize", "llama-bench"], check=True)
    return build


WRITER = r'''
import sys, numpy as np, gguf
src, out, arch, hidden, ff, heads, kv_heads, layers, bias, theta, eps = sys.argv[1:12]
hidden, ff, heads, kv_heads, layers = map(int, (hidden, ff, heads, kv_heads, layers))
bias = bias == "1"
reader = gguf.GGUFReader(src)
w = gguf.GGUFWriter(out, arch)
fields = {f.name: f for f in reader.fields.values()}
tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in fields["tokenizer.ggml.tokens"].data]
vocab = len(tokens)
w.add_context_length(32768)
w.add_embedding_length(hidden)
w.add_block_count(layers)
w.add_feed_forward_length(ff)
w.add_head_count(heads)
w.add_head_count_kv(kv_heads)
w.add_layer_norm_rms_eps(float(eps))
w.add_rope_freq_base(float(theta))
w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
w.add_tokenizer_model(bytes(fields["tokenizer.ggml.model"].parts[-1]).decode())
if "tokenizer.ggml.pre" in fields:
    w.add_tokenizer_pre(bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode())
w.add_token_list(tokens)
w.add_token_types([int(fields["tokenizer.ggml.token_type"].parts[i][0]) for i in fields["tokenizer.ggml.token_type"].data])
w.add_token_merges([bytes(fields["tokenizer.ggml.merges"].parts[i]).decode("utf-8") for i in fields["tokenizer.ggml.merges"].data])
for key, add in (("tokenizer.ggml.eos_token_id", w.add_eos_token_id), ("tokenizer.ggml.bos_token_id", w.add_bos_token_id),
                 ("tokenizer.ggml.padding_token_id", w.add_pad_token_id)):
    if key in fields:
        add(int(fields[key].parts[-1][0]))
rng = np.random.default_rng(2026)
def mat(rows, cols, std=0.02):
    return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float16)
def ones(n):
    return np.ones(n, dtype=np.float32)
head_dim = hidden // heads
w.add_tensor("token_embd.weight", mat(vocab, hidden))
for i in range(layers):
    p = f"blk.{i}."
    w.add_tensor(p + "attn_norm.weight", ones(hidden))
    w.add_tensor(p + "attn_q.weight", mat(heads * head_dim, hidden))
    w.add_tensor(p + "attn_k.weight", mat(kv_heads * head_dim, hidden))
    w.add_tensor(p + "attn_v.weight", mat(kv_heads * head_dim, hidden))
    if bias:
        w.add_tensor(p + "attn_q.bias", np.zeros(heads * head_dim, dtype=np.float32))
        w.add_tensor(p + "attn_k.bias", np.zeros(kv_heads * head_dim, dtype=np.float32))
        w.add_tensor(p + "attn_v.bias", np.zeros(kv_heads * head_dim, dtype=np.float32))
    w.add_tensor(p + "attn_output.weight", mat(hidden, heads * head_dim))
    w.add_tensor(p + "ffn_norm.weight", ones(hidden))
    w.add_tensor(p + "ffn_gate.weight", mat(ff, hidden))
    w.add_tensor(p + "ffn_up.weight", mat(ff, hidden))
    w.add_tensor(p + "ffn_down.weight", mat(hidden, ff))
w.add_tensor("output_norm.weight", ones(hidden))
w.add_tensor("output.weight", mat(vocab, hidden))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
'''


def make_file(py: str, build: Path, name: str, layers: int) -> Path:
    """The Q4_K_M file of `name` with `layers` blocks (written once, kept in target/)."""
    WORK.mkdir(parents=True, exist_ok=True)
    q = WORK / f"{name}-L{layers}-Q4_K_M.gguf"
    if q.exists():
        return q
    s = SHAPES[name]
    models = Path(os.environ.get("LCROSS_MODELS") or Path.home() / ".cache" / "lcross" / "models")
    src = models / f"{TOKENIZER_SOURCE}.gguf"
    if not src.exists():
        sys.exit(f"no {src}: run scripts/fetch-models {TOKENIZER_SOURCE}")
    f16 = WORK / f"{name}-L{layers}-f16.gguf"
    subprocess.run([py, "-c", WRITER, str(src), str(f16), s["arch"], str(s["hidden"]), str(s["ff"]), str(s["heads"]),
                    str(s["kv_heads"]), str(layers), "1" if s["bias"] else "0", str(s["theta"]), str(s["eps"])], check=True)
    subprocess.run([str(build / "bin" / "llama-quantize"), str(f16), str(q), "Q4_K_M"], check=True, capture_output=True)
    f16.unlink()
    return q


def timed_rss(cmd: list[str]) -> tuple[str, float]:
    """stdout and peak RSS (MiB) of a command, via /usr/bin/time."""
    out = subprocess.run(["/usr/bin/time", "-f", "RSS %M", *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    rss = [line for line in out.stderr.splitlines() if line.startswith("RSS ")][-1]
    return out.stdout, int(rss.split()[1]) / 1024


def run_lcross(path: Path, prompt: int, decode: int) -> dict:
    out, rss = timed_rss([str(LCROSS), "--json", "bench", "-m", str(path), "--modes", "quantized", "--repeat", "1",
                          "--prompt-tokens", str(prompt), "--decode-tokens", str(decode)])
    row = json.loads(out)["rows"][0]
    return {"prefill": row["prefill_tokens_per_second"], "decode": row["decode_tokens_per_second"], "rss": rss}


def run_llama(build: Path, path: Path, prompt: int, decode: int, threads: int) -> dict:
    out, rss = timed_rss([str(build / "bin" / "llama-bench"), "-m", str(path), "-p", str(prompt), "-n", str(decode),
                          "-t", str(threads), "-r", "1", "-o", "json"])
    rows = json.loads(out)
    pp = next(r for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)["avg_ts"]
    tg = next(r for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)["avg_ts"]
    return {"prefill": pp, "decode": tg, "rss": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="qwen2.5-7b,llama-3.1-8b")
    ap.add_argument("--layers", default="2,4", help="two depths: their difference is the cost of one layer")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--llama-cpp", help="a llama.cpp build directory (bin/llama-quantize, bin/llama-bench)")
    ap.add_argument("--out")
    a = ap.parse_args()
    if not LCROSS.is_file():
        sys.exit(f"no {LCROSS}: run cargo build --release first")
    depths = [int(x) for x in a.layers.split(",")]
    assert len(depths) == 2 and depths[0] < depths[1], "--layers takes two increasing depths"
    py = python_with_gguf()
    build = llama_cpp(a.llama_cpp)
    threads = os.cpu_count() or 2
    results = {}
    for name in a.shapes.split(","):
        for L in depths:
            path = make_file(py, build, name, L)
            runs = {"lcross": [], "llama.cpp": []}
            for r in range(a.repeat):
                order = ["lcross", "llama.cpp"] if r % 2 == 0 else ["llama.cpp", "lcross"]
                for engine in order:
                    res = run_lcross(path, a.prompt_tokens, a.decode_tokens) if engine == "lcross" else run_llama(build, path, a.prompt_tokens, a.decode_tokens, threads)
                    runs[engine].append(res)
                    print(f"{name} L{L} round {r + 1} {engine}: prefill {res['prefill']:.1f} tok/s, decode {res['decode']:.2f} tok/s, RSS {res['rss']:.0f} MiB", file=sys.stderr)
            for engine, rs in runs.items():
                results[(name, L, engine)] = {k: statistics.median(x[k] for x in rs) for k in ("prefill", "decode", "rss")}
    cpu = platform.processor() or platform.machine()
    model_name = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), cpu) \
        if Path("/proc/cpuinfo").exists() else cpu
    lines = [f"7B-shaped random-weight models, Q4_K_M (llama-quantize), {model_name}, {threads} threads, "
             f"{a.prompt_tokens}-token prompt, {a.decode_tokens} decoded tokens, medians of {a.repeat} alternating rounds.", "",
             "| shape | layers | engine | prefill tok/s | decode tok/s | peak RSS MiB | lcross / llama.cpp (prefill, decode) |",
             "|---|---:|---|---:|---:|---:|---|"]
    for name in a.shapes.split(","):
        for L in depths:
            l, c = results[(name, L, "lcross")], results[(name, L, "llama.cpp")]
            for engine, r in (("lcross", l), ("llama.cpp", c)):
                ratio = f"{l['prefill'] / c['prefill']:.2f}x, {l['decode'] / c['decode']:.2f}x" if engine == "lcross" else ""
                lines.append(f"| {name} | {L} | {engine} | {r['prefill']:.1f} | {r['decode']:.2f} | {r['rss']:.0f} | {ratio} |")
    lines += ["", "Per layer (the difference of the two depths) and projected to the full model "
              "(seconds per token: rest + layers x per layer):", "",
              "| shape | engine | prefill ms/token/layer | decode ms/token/layer | projected prefill tok/s | projected decode tok/s |",
              "|---|---|---:|---:|---:|---:|"]
    for name in a.shapes.split(","):
        full = SHAPES[name]["layers_full"]
        for engine in ("lcross", "llama.cpp"):
            lo, hi = results[(name, depths[0], engine)], results[(name, depths[1], engine)]
            row = []
            for k in ("prefill", "decode"):
                per = (1 / hi[k] - 1 / lo[k]) / (depths[1] - depths[0])
                rest = 1 / lo[k] - depths[0] * per
                row.append((per, 1 / (rest + full * per)))
            lines.append(f"| {name} ({full} layers) | {engine} | {row[0][0] * 1e3:.2f} | {row[1][0] * 1e3:.2f} | {row[0][1]:.1f} | {row[1][1]:.2f} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
