#!/usr/bin/env python3
"""The peer's f32 matmul rate on this machine, for reading peers.py's ratios.

    PY scripts/bench/torch_matmul.py        # PY: the interpreter peers.py used (torch installed)

Best of 15 wall-clock runs of torch's f32 `x @ W.T` with Qwen 0.5B's MLP up projection
(W: 4864 x 896) at 512 rows (prefill) and 32 rows (a decode step of 32 rows), with one
and two threads. Compare with `scripts/bench/gemm-isa` (candle's gemm, one thread) and the
`matmul_gflops` that every `lcross bench` row carries (candle, all cores, 512 rows).
"""
import time

import torch

W = torch.randn(4864, 896)
for threads in (1, 2):
    torch.set_num_threads(threads)
    for rows in (512, 32):
        x = torch.randn(rows, 896)
        best = 0.0
        for _ in range(15):
            t0 = time.perf_counter()
            x @ W.T
            best = max(best, 2 * rows * 896 * 4864 / (time.perf_counter() - t0) / 1e9)
        print(f"torch {torch.__version__} f32 {rows}x896 @ 896x4864, {threads} thread(s): best {best:.1f} GFLOP/s")
# Which BLAS and which vector ISA torch's CPU kernels use here.
for line in torch.__config__.show().splitlines():
    if any(w in line for w in ("BLAS", "MKL", "CPU capability")):
        print(line.strip())
