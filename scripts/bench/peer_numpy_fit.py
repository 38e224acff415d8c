#!/usr/bin/env python3
"""Peer measurement for `lcross bench --fit --peer PYTHON`: numpy, f64, the way a Python
implementation of L-Cross fits T (the paper's closed form T = pinv(X) @ Y; Procrustes by
the SVD of X^T Y).

Usage: peer_numpy_fit.py N D_S D_T REPEAT
Prints one JSON object on its last line: median seconds per estimator, numpy version.
"""
import json
import statistics
import sys
import time

import numpy as np

n, ds, dt, repeat = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(0)
x = rng.random((n, ds)) - 0.5
y = rng.random((n, dt)) - 0.5


def ols():
    return np.linalg.pinv(x) @ y


def procrustes():
    u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
    return u @ vt


out = {"numpy": np.__version__}
for name, f in [("ols", ols), ("procrustes", procrustes)]:
    times = []
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    out[f"{name}_seconds"] = statistics.median(times)
print(json.dumps(out))
