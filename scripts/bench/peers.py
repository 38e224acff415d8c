#!/usr/bin/env python3
"""lcross against the Python stack on the same work, in one run, alternating.

    python3 scripts/bench/peers.py [--python PY] [--repeat 3] [--items ...] [--out docs/peers.md]
                                   [--log results/peers.jsonl]

Without --python it makes a virtualenv (.venv-peers at the repository root, ignored by
git) and installs torch, transformers, gguf and accelerate from PyPI into it; CI never
runs this. Each round runs every engine once per (model, workload), in turn, so load
changes on the machine hit all engines alike; the table gives medians over rounds and
the ratio lcross / peer (above 1: lcross is faster). Needs `cargo build --release`.

Every measurement is appended to --log (JSON lines) as soon as it is taken; a rerun with
the same --log and the same sizes skips what is already there, so an interrupted run
resumes where it stopped.
"""
import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LCROSS = ROOT / "target" / "release" / "lcross"
PEER = ROOT / "scripts" / "bench" / "peer_workloads.py"
MODELS = {"qwen2.5-coder-0.5b-instruct": 14, "smollm2-135m-instruct": 12}
# lcross and the peers read the same CAA refusal files: the project's local mirror unless
# LCROSS_DATA says otherwise (lcross's own default is ~/.cache/lcross/data).
os.environ.setdefault("LCROSS_DATA", str(ROOT.parent / "shared" / "data"))


def peer_python(arg):
    if arg:
        return arg
    env = ROOT / ".venv-peers"
    py = env / "bin" / "python"
    if not py.exists():
        venv.create(env, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch", "transformers", "gguf", "accelerate", "numpy"], check=True)
        # llama.cpp builds from source (cmake, ~10 minutes on 2 cores); the decode peer
        # needs it. The native build (-march=native) segfaulted in llama_decode on the
        # Intel Xeon of 2026-11-28; the AVX2 build works. Where the CPU has AVX-512 the
        # build uses it too (llama.cpp's fair best there; worked on a Zen 5, 2026-12-06).
        cmake = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists() and "avx512f" in cpuinfo.read_text(errors="replace"):
            cmake += " -DGGML_AVX512=ON"
        subprocess.run([str(py), "-m", "pip", "install", "-q", "llama-cpp-python"], check=False, env={**os.environ, "CMAKE_ARGS": cmake})
    return str(py)


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--workloads", default="extract,ab,generate,decode")
    ap.add_argument("--extract-pairs", type=int, default=200)
    ap.add_argument("--ab-questions", type=int, default=50)
    ap.add_argument("--gen-prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--no-llamacpp", action="store_true", help="skip the llama.cpp decode peer")
    ap.add_argument("--single-rounds", type=int, help="run transformers one-at-a-time (extract, ab, generate) only in the first N rounds: "
                    "the slowest peer by far (a quarter of an hour per round on Qwen 0.5B), whose ratios are far from the targets")
    ap.add_argument("--out")
    ap.add_argument("--log", default=str(ROOT / "results" / "peers.jsonl"), help="append every measurement here; resume from it")
    a = ap.parse_args()
    if not LCROSS.exists():
        sys.exit(f"{LCROSS} is missing: run `cargo build --release` first")
    py = peer_python(a.python)
    items = {"extract": a.extract_pairs, "ab": a.ab_questions, "generate": a.gen_prompts, "decode": 1}
    results = {}
    # What a logged measurement must match to be reused: the sizes, the lcross binary
    # measured (its sha256: a rebuild starts afresh) and the peers' interpreter.
    sizes = {"extract": a.extract_pairs, "ab": a.ab_questions, "generate": a.gen_prompts, "new_tokens": a.new_tokens,
             "lcross_sha256": hashlib.sha256(LCROSS.read_bytes()).hexdigest(), "python": py}
    log = Path(a.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted write
            if rec.get("sizes") == sizes:
                done[(rec["round"], rec["model"], rec["workload"], rec["engine"])] = rec["row"]
    for rnd in range(a.repeat):
        for m in a.models.split(","):
            layer = MODELS.get(m, 12)
            for w in a.workloads.split(","):
                n = str(items[w])
                engines = [("lcross", [str(LCROSS), "bench", "--workload", w, "-m", m, "--layer", str(layer), "--items", n, "--new-tokens", str(a.new_tokens)])]
                if w == "generate":
                    engines.append(("lcross one-at-a-time", [str(LCROSS), "bench", "--workload", "generate-serial", "-m", m, "--layer", str(layer), "--items", n, "--new-tokens", str(a.new_tokens)]))
                if w == "decode":
                    engines.append(("lcross quantized", [str(LCROSS), "--weights", "quantized", "bench", "--workload", w, "-m", m, "--layer", str(layer), "--items", n, "--new-tokens", str(a.new_tokens)]))
                for mode in (["single"] if w == "decode" else ["single", "batched"]):
                    engines.append((f"transformers {mode}", [py, str(PEER), m, str(layer), w, mode, n, str(a.new_tokens)]))
                if w == "decode" and not a.no_llamacpp:
                    engines.append(("llama.cpp", [py, str(PEER), m, str(layer), w, "llamacpp", n, str(a.new_tokens)]))
                for name, cmd in engines:
                    if name == "transformers single" and w != "decode" and a.single_rounds is not None and rnd >= a.single_rounds:
                        continue
                    key = (rnd, m, w, name)
                    if key in done:
                        row = done[key]
                    else:
                        row = run(cmd)
                        with log.open("a") as f:
                            f.write(json.dumps({"round": rnd, "model": m, "workload": w, "engine": name, "sizes": sizes, "cpu": cpu_name(), "row": row}) + "\n")
                    results.setdefault((m, w, name), []).append(row)
                    print(f"round {rnd + 1}: {m} {w} {name}: {row['per_second']:.2f} {row['unit']}/s", file=sys.stderr, flush=True)
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; medians of {a.repeat} alternating rounds.",
        "",
        "| model | workload | engine | median /s | rounds | unit | lcross / engine (llama.cpp: lcross quantized / it) | lcross: GFLOP, weight GB, floor s (bound), share of floor |",
        "|---|---|---|---:|---:|---|---:|---|",
    ]
    for (m, w, name), rows in results.items():
        med = statistics.median(r["per_second"] for r in rows)
        # Quantized engines compare with lcross quantized, the others with lcross f32.
        ref = "lcross quantized" if name == "llama.cpp" and (m, w, "lcross quantized") in results else "lcross"
        mine = statistics.median(r["per_second"] for r in results[(m, w, ref)])
        floor = ""
        if "floor_s" in rows[0]:
            # lcross rows carry their floor (counted matmul FLOPs over the measured matmul
            # rate, or weight bytes over the measured bandwidth, whichever is longer).
            f = min(rows, key=lambda r: abs(r["per_second"] - med))
            bound = "compute" if f["compute_floor_s"] >= f["memory_floor_s"] else "memory"
            floor = f"{f['gflop']:.0f}, {f['weight_gb']:.1f}, {f['floor_s']:.2f} ({bound}), {f['of_floor']:.2f}"
        lines.append(f"| {m} | {w} | {rows[0]['engine'] if name == 'lcross' else name} | {med:.2f} | {len(rows)} | {rows[0]['unit']} | {mine / med:.2f}x | {floor} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        Path(a.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
