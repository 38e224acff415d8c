#!/usr/bin/env python3
"""Reference values of the alignment metrics (lcross_core::similarity) computed with numpy in
the matrix form of Huh et al.'s reference code (platonic-rep, metrics.py): L2-normalised
states, K = A A^T, biased HSIC tr(K H L H), Song et al.'s unbiased HSIC, k-NN by inner product
without the point itself, CKNNA on the kernels masked by the shared neighbours, SVCCA on the
standardised states' top singular vectors (canonical correlations as the singular values of
U_A^T U_B, where the reference fits scikit-learn's CCA; no 1e-6 in the denominators).

    python3 scripts/reference/make_similarity_fixture.py   (numpy only)

Writes crates/lcross-core/tests/fixtures/similarity.json: two related representations of
30 texts (12 and 9 dimensions: B is a noisy linear image of A) and the five metrics.
"""
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "crates" / "lcross-core" / "tests" / "fixtures" / "similarity.json"
TOPK, CCA_DIM = 5, 4


def knn(K, k):
    K = K.copy()
    np.fill_diagonal(K, -np.inf)
    # stable descending order: ties keep the lower index first
    return np.argsort(-K, axis=1, kind="stable")[:, :k]


def hsic_biased(K, L):
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    return np.trace(K @ H @ L @ H)


def hsic_unbiased(K, L):
    m = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    v = np.sum(Kt * Lt.T) + np.sum(Kt) * np.sum(Lt) / ((m - 1) * (m - 2)) - 2 * np.sum(Kt @ Lt) / (m - 2)
    return v / (m * (m - 3))


def metrics(A, B):
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    n = A.shape[0]
    K, L = A @ A.T, B @ B.T
    nk, nl = knn(K, TOPK), knn(L, TOPK)
    mk, ml = np.zeros((n, n)), np.zeros((n, n))
    mk[np.arange(n)[:, None], nk] = 1
    ml[np.arange(n)[:, None], nl] = 1
    mutual = float(((mk * ml).sum(1) / TOPK).mean())
    cka = hsic_biased(K, L) / np.sqrt(hsic_biased(K, K) * hsic_biased(L, L))
    ucka = hsic_unbiased(K, L) / np.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L))
    m = mk * ml
    cknna = hsic_unbiased(m * K, m * L) / np.sqrt(hsic_unbiased(mk * K, mk * K) * hsic_unbiased(ml * L, ml * L))

    def top_u(X):
        X = X - X.mean(0)
        X = X / (X.std(0, ddof=1) + 1e-8)
        return np.linalg.svd(X, full_matrices=False)[0][:, :CCA_DIM]

    s = np.linalg.svd(top_u(A).T @ top_u(B), compute_uv=False)
    svcca = float(np.minimum(s, 1.0).mean())
    return {"mutual_knn": mutual, "cka": float(cka), "unbiased_cka": float(ucka), "cknna": float(cknna), "svcca": svcca}


def main():
    rng = np.random.default_rng(2026)
    A = rng.standard_normal((30, 12))
    B = A @ rng.standard_normal((12, 9)) + 0.5 * rng.standard_normal((30, 9))
    OUT.write_text(json.dumps({"topk": TOPK, "cca_dim": CCA_DIM, "a": A.tolist(), "b": B.tolist(), "expected": metrics(A, B)}, indent=1))
    print(json.dumps(metrics(A, B)))


if __name__ == "__main__":
    main()
