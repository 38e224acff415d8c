#!/usr/bin/env python3
"""The Python package against the CLI on the same work, in one run, alternating.

    target/pyenv/bin/python scripts/bench/python_vs_cli.py [--model M] [--layer L] [--repeat 5] [--out FILE]

Two workloads, each timed end to end as a user runs it (a fresh process: interpreter or
binary start, model load, the work, the output):
  extract   a mean-difference vector from the 64 pairs of builtin:optimism (no cache)
  generate  a batched steered generation: 8 prompts x betas 0 and 4, 32 new tokens, greedy
Rounds alternate Python and the CLI so load changes on the machine hit both alike; the
table gives medians and the ratio Python / CLI (at most 1.03 is the goal of issue 29).
Needs `cargo build --release` (target/release/lcross) and the wheel installed in the
Python that runs this (scripts/python-test does both). CI never runs it.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LCROSS = ROOT / "target" / "release" / "lcross"
PROMPTS = [
    "Describe a walk by the sea.",
    "What makes a good breakfast?",
    "Tell me about your week.",
    "How do trains work?",
    "Write two lines about rain.",
    "What is a library for?",
    "Explain why leaves fall.",
    "Plan a quiet Sunday.",
]


def timed(cmd, env):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr}")
    return time.perf_counter() - t, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args()
    if not LCROSS.is_file():
        sys.exit(f"no {LCROSS}: run cargo build --release first")
    work = Path(tempfile.mkdtemp(prefix="lcross-pybench-"))
    env = dict(os.environ, LCROSS_CACHE=str(work / "cache"))
    env.setdefault("LCROSS_DATA", str(ROOT.parent / "shared" / "data"))
    sv = work / "sv.safetensors"
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    extract_cli = [LCROSS, "extract", "-m", a.model, "-d", "builtin:optimism", "-l", str(a.layer), "--no-cache", "-o", sv, "--json"]
    extract_py = [sys.executable, "-c",
                  "import lcross, sys; m = lcross.Model(sys.argv[1]); "
                  "lcross.extract(m, 'builtin:optimism', [int(sys.argv[2])], cache=False).save(sys.argv[3])",
                  a.model, str(a.layer), str(work / "sv-py.safetensors")]
    subprocess.run(extract_cli, check=True, capture_output=True, env=env)  # the vector the generation steers with
    generate_cli = [LCROSS, "steer", "-m", a.model, "--vector", sv, "--betas=0,4", "--prompts", prompts, "--max-tokens", "32", "--json"]
    generate_py = [sys.executable, "-c",
                   "import lcross, sys, json; m = lcross.Model(sys.argv[1]); sv = lcross.SteeringVector.load(sys.argv[2]); "
                   "ps = open(sys.argv[3]).read().split(chr(10)); ps = [p for p in ps if p]; "
                   "rows = [(p, lcross.Steer(sv, b)) for p in ps for b in (0.0, 4.0)]; "
                   "print(json.dumps(m.generate_batch(rows, max_tokens=32, chat=False, progress=False)))",
                   a.model, str(sv), str(prompts)]
    times = {(w, e): [] for w in ("extract", "generate") for e in ("python", "cli")}
    answers = {}
    for r in range(a.repeat):
        for w, cli, py in (("extract", extract_cli, extract_py), ("generate", generate_cli, generate_py)):
            order = [("cli", cli), ("python", py)] if r % 2 == 0 else [("python", py), ("cli", cli)]
            for engine, cmd in order:
                s, out = timed(cmd, env)
                times[(w, engine)].append(s)
                if w == "generate":
                    answers[engine] = [row["text"] for row in json.loads(out)["rows"]] if engine == "cli" else json.loads(out)
        print(f"round {r + 1}/{a.repeat}: " + ", ".join(f"{w}/{e} {v[-1]:.2f} s" for (w, e), v in times.items()), file=sys.stderr)
    same = answers.get("cli") == answers.get("python")
    cpu = platform.processor() or platform.machine()
    lines = [
        f"Python package vs CLI on {a.model} (layer {a.layer}), {os.cpu_count()} cores ({cpu}), "
        f"{a.repeat} alternating rounds, medians of wall time per process (start, load, work, output).",
        "",
        "| workload | CLI s | Python s | Python / CLI |",
        "|---|---:|---:|---:|",
    ]
    for w, what in (("extract", "extract 64 pairs (no cache)"), ("generate", "steered batch: 8 prompts x 2 betas, 32 tokens")):
        c, p = statistics.median(times[(w, "cli")]), statistics.median(times[(w, "python")])
        lines.append(f"| {what} | {c:.2f} | {p:.2f} | {p / c:.3f} |")
    lines.append("")
    lines.append(f"Steered answers identical between Python and the CLI: {same}.")
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
