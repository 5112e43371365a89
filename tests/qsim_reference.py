#!/usr/bin/env python3
"""Independent numpy reference for tappa's q-similarity (src/analysis/qsim.{h,cpp}).

It follows the official TAPPA code (KVCache/tappa/tappa_qsim.py::compute_q_sim_torch, PAPER.md
section 2.1) literally: per head, build the full T x T matrix of the mode, take
(sum(M) - trace(M)) / (T (T - 1)), then the mean over heads; T <= 1 gives 0. It shares no code
with the C++ side (which walks unordered pairs and uses an O(T D) identity for cosine), so
agreement checks both the formulas and the shortcuts.

Everything is computed in float64 from float32 inputs. (The official code runs in the model
dtype, and KL in float32; tappa uses double accumulators, so float64 is the right reference for
it. The difference from a float32 run is at float32 rounding level.)

Usage: qsim_reference.py OUT.json   -- writes seeded random test vectors and the expected values.
"""
import json
import math
import sys

import numpy as np

MODES = ["cosine", "dot", "euclidean", "l1", "rbf", "pearson", "angular", "kl"]
EPS = 1e-8


def matrix(q, mode, rbf_sigma=1.0, kl_eps=1e-8, pearson_official=False):
    """q: [T, D] float64 -> the mode's T x T matrix, exactly as the official code builds it."""
    T, D = q.shape
    if mode == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), EPS)
        return qn @ qn.T
    if mode == "dot":
        return q @ q.T
    diff = q[:, None, :] - q[None, :, :]
    if mode == "euclidean":
        return np.sqrt((diff ** 2).sum(-1))
    if mode == "l1":
        return np.abs(diff).sum(-1)
    if mode == "rbf":
        return np.exp(-(diff ** 2).sum(-1) / (2.0 * rbf_sigma ** 2))
    if mode == "pearson":
        qc = q - q.mean(-1, keepdims=True)
        qn = qc / np.maximum(np.linalg.norm(qc, axis=-1, keepdims=True), EPS)
        corr = qn @ qn.T
        return corr / D if pearson_official else corr
    if mode == "angular":
        qn = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), EPS)
        return np.arccos(np.clip(qn @ qn.T, -1.0, 1.0)) / math.pi
    if mode == "kl":
        z = q - q.max(-1, keepdims=True)
        p = np.exp(z)
        p = p / p.sum(-1, keepdims=True)
        p = np.maximum(p, kl_eps)
        p = p / p.sum(-1, keepdims=True)
        lp = np.log(p)
        return 0.5 * ((p[:, None, :] - p[None, :, :]) * (lp[:, None, :] - lp[None, :, :])).sum(-1)
    raise ValueError(mode)


def head_value(q, **kw):
    T = q.shape[0]
    if T <= 1:
        return 0.0
    m = matrix(q, **kw)
    return float((m.sum() - np.trace(m)) / (T * (T - 1)))


def head_lag(q, lag, **kw):
    T = q.shape[0]
    if T <= lag:
        return 0.0
    m = matrix(q, **kw)
    return float(np.mean([m[t, t + lag] for t in range(T - lag)]))


def heads(buf, T, H, D):
    """[T][H*D] row-major buffer -> list of H arrays [T, D] (head h at columns h*D .. h*D+D)."""
    x = buf.reshape(T, H, D)
    return [x[:, h, :] for h in range(H)]


def windows(T, window, stride, keep_partial):
    out, start = [], 0
    while start < T:
        length = min(window, T - start)
        if length < window and not keep_partial:
            break
        out.append((start, length))
        start += stride
    return out


def make_case(name, rng, T, H, D, kind="normal"):
    if kind == "normal":
        x = rng.standard_normal((T, H, D))
    elif kind == "clustered":  # LLM-like: a shared direction per head plus noise -> cosine ~ 0.9
        base = rng.standard_normal((1, H, D)) * 3.0
        x = base + rng.standard_normal((T, H, D))
    elif kind == "zeros":  # exact zero rows (cosine trace < T), an all-zero head, a tiny-norm row
        x = rng.standard_normal((T, H, D))
        x[3, 0, :] = 0.0
        x[7, 0, :] = 0.0
        x[:, 1, :] = 0.0
        x[5, 0, :] *= 1e-10  # norm below the 1e-8 clamp
    elif kind == "large":  # large magnitudes: softmax saturates (kl clamps), rbf underflows to 0
        x = rng.standard_normal((T, H, D)) * rng.choice([1.0, 50.0, 300.0], size=(T, H, 1))
    elif kind == "constant":  # constant rows: zero variance for pearson, identical rows
        x = rng.standard_normal((T, H, D))
        x[1, 0, :] = 2.5
        x[4, 0, :] = -1.0
        x[2, 0, :] = x[0, 0, :]
    else:
        raise ValueError(kind)
    buf = x.reshape(T, H * D).astype(np.float32)
    q64 = buf.astype(np.float64)
    results = []
    settings = [dict(mode=m) for m in MODES]
    settings.append(dict(mode="pearson", pearson_official=True))
    settings.append(dict(mode="rbf", rbf_sigma=8.0))
    for s in settings:
        per_head = [head_value(h, **s) for h in heads(q64, T, H, D)]
        lag1 = [head_lag(h, 1, **s) for h in heads(q64, T, H, D)]
        lag3 = [head_lag(h, 3, **s) for h in heads(q64, T, H, D)]
        results.append({
            "mode": s["mode"],
            "rbf_sigma": s.get("rbf_sigma", 1.0),
            "pearson_official_scaling": s.get("pearson_official", False),
            "per_head": per_head,
            "mean": float(np.mean(per_head)),
            "lag1_per_head": lag1,
            "lag1_mean": float(np.mean(lag1)),
            "lag3_per_head": lag3,
        })
    wins = []
    for (w, st, kp) in [(8, 4, False), (8, 4, True), (5, 3, True)]:
        for mode in ["cosine", "euclidean"]:
            vals = []
            for (start, length) in windows(T, w, st, kp):
                sub = q64[start:start + length]
                vals.append([start, length, float(np.mean([head_value(h, mode=mode)
                                                           for h in heads(sub, length, H, D)]))])
            wins.append({"window": w, "stride": st, "keep_partial": kp, "mode": mode, "values": vals})
    return {
        "name": name, "n_rows": T, "n_heads": H, "head_dim": D,
        # float32 values printed with 9 significant digits: they read back as the same float32.
        "data": [float("%.9g" % v) for v in buf.reshape(-1)],
        "results": results,
        "windows": wins,
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: qsim_reference.py OUT.json")
    rng = np.random.default_rng(20260129)
    cases = [
        make_case("T1", rng, 1, 2, 8),
        make_case("T2", rng, 2, 2, 16),
        make_case("small", rng, 8, 4, 32),
        make_case("odd_dims", rng, 17, 3, 20),
        make_case("gqa_queries", rng, 12, 8, 16),
        make_case("gqa_keys", rng, 12, 2, 16),
        make_case("clustered", rng, 24, 2, 48, "clustered"),
        make_case("zero_rows", rng, 10, 2, 16, "zeros"),
        make_case("large_magnitude", rng, 9, 2, 16, "large"),
        make_case("constant_rows", rng, 6, 1, 8, "constant"),
    ]
    doc = {
        "generator": "tests/qsim_reference.py (numpy %s), seed 20260129" % np.__version__,
        "note": "expected values in float64 from the float32 data; see the script's docstring",
        "cases": cases,
    }
    with open(sys.argv[1], "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
