#!/usr/bin/env python3
"""Independent numpy reference for tappa's KV-compression arithmetic (src/kv/{scorers,allocators}).

Every function below is a literal numpy transcription of the official Python code (torch ops
replaced by their numpy equivalents), not of the C++:
  * window attention + SnapKV / H2O scores: KVCache-Factory / LLM-TAPPA pyramidkv_utils.py
    (SnapKVCluster, H2OKVCluster: the W x W corner mask is added to attn[..., -W:, -W:]);
  * CAKE token scores and layer preference: cakekv cake/model/modify_llama.py, cake/utils.py;
  * adjust_budgets: cake/utils.py, verbatim;  the raw split: cake_cache.py (float32 numpy scalars);
  * PyramidKV budgets: PyramidKVCluster.update_kv;
  * Expected Attention: kvpress expected_attention_press.py (average RoPE rotation matrix over the
    next n_future positions, mean/covariance of the queries after the n_sink first rows);
  * decode eviction: CakeDecodingKVCache_LayerWise;
  * query-head granularity (the "query_head" case): the TAPPA / KVCache-Factory harness, where the
    cluster's update_kv receives K/V after repeat_kv and keeps one token set per query head
    (SnapKVCluster, H2OKVCluster, PyramidKVCluster), on the tiny GGUF model qwen2_tiny of
    scripts/make_tiny_models.py, its queries and keys from scripts/tiny_reference.py's fp64 forward.
The only deliberate departures, which the C++ shares: scores are averaged over each KV head's
query group (the official SnapKV/H2O baselines select per query head after repeat_kv; the
query_head case does not average: it is that selection), and everything runs in float64 from
float32 inputs (the official code runs in fp16/bf16).

Usage: kv_reference.py OUT.json   -- writes seeded test inputs and the expected values (numpy, and
the gguf package for the query_head case's model, as scripts/make_tiny_models.py: .cache/venv).
The output is committed as tests/data/kv/vectors.json; tests/kv_scorers_test.cpp,
tests/kv_allocators_test.cpp and tests/kv_query_head_test.cpp read it.
"""
import json
import math
import os
import sys
import tempfile

import numpy as np

RNG = np.random.default_rng(20260131)


def f32(shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def lst(a):
    """Expected values: float64, full precision."""
    return np.asarray(a, dtype=np.float64).ravel().tolist()


def inp(a):
    """float32 inputs: 9 significant digits round-trip exactly and keep the file small."""
    return [float("%.9g" % x) for x in np.asarray(a, dtype=np.float32).ravel()]


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------

def repeat_kv(k, G):
    return np.repeat(k, G, axis=0)  # [H_kv, N, d] -> [H, N, d], head h = kv*G + g


def window_attention(q, k, corner):
    """q [H, R, d], k [H_kv, N, d]; the corner x corner mask added to the bottom-right block."""
    H, R, d = q.shape
    G = H // k.shape[0]
    kk = repeat_kv(k.astype(np.float64), G)
    w = np.einsum("hrd,hnd->hrn", q.astype(np.float64), kk) / math.sqrt(d)
    M = corner
    if M > 0:
        mask = np.full((M, M), -np.inf)
        cond = np.arange(M)
        mask[cond[None, :] < (cond + 1)[:, None]] = 0.0  # masked_fill(mask_cond < (mask_cond + 1).view(-1, 1), 0)
        w[:, R - M:, w.shape[2] - M:] += mask
    w = w - w.max(axis=-1, keepdims=True)
    e = np.exp(w)
    return e / e.sum(axis=-1, keepdims=True)


def pool(x, kind, k):
    """torch avg_pool1d(count_include_pad) / max_pool1d with padding k//2, stride 1 on the last axis."""
    if kind == "none":
        return x.copy()
    r = k // 2
    n = x.shape[-1]
    if kind == "avg":
        xp = np.concatenate([np.zeros(x.shape[:-1] + (r,)), x, np.zeros(x.shape[:-1] + (r,))], axis=-1)
        return np.stack([xp[..., j:j + k].sum(-1) / k for j in range(n)], axis=-1)
    xp = np.concatenate([np.full(x.shape[:-1] + (r,), -np.inf), x, np.full(x.shape[:-1] + (r,), -np.inf)], axis=-1)
    return np.stack([xp[..., j:j + k].max(-1) for j in range(n)], axis=-1)


def group_mean(s, n_kv):
    H = s.shape[0]
    return s.reshape(n_kv, H // n_kv, -1).mean(axis=1)


def snapkv(A, n_kv, W, kind, k, mean_rows=False):
    s = A[:, -W:, :-W].sum(axis=1)
    if mean_rows:
        s = s / W
    return group_mean(pool(s, kind, k), n_kv)


def cake_token(A, n_kv, W, gamma, kind="avg", k=5):
    win = A[:, -W:, :]
    s = win.mean(axis=1) + gamma * win.var(axis=1, ddof=1)
    s = s[:, :-W]
    return group_mean(pool(s, kind, k), n_kv)


def cake_stats(A, W):
    sl = A[:, -W:, :-W]
    ent = -np.sum(sl * np.log(sl + 1e-10))
    var = np.var(sl, axis=1, ddof=1).sum()
    return float(ent), float(var)


def h2o(A, n_kv, W):
    s = A[:, :, :-W].sum(axis=1)
    return group_mean(s, n_kv)


# ---------------------------------------------------------------------------------------------
# expected attention
# ---------------------------------------------------------------------------------------------

def rope_matrix(pos, inv_freq, d, n_rot, neox):
    """R_p as a d x d matrix: R_p @ x rotates channel pair i by pos * inv_freq[i]."""
    R = np.eye(d)
    half = n_rot // 2
    for i in range(half):
        a, b = (i, i + half) if neox else (2 * i, 2 * i + 1)
        c, s = math.cos(pos * inv_freq[i]), math.sin(pos * inv_freq[i])
        R[a, a], R[a, b], R[b, a], R[b, b] = c, -s, s, c
    return R


def kvpress_rotation_neox(positions, inv_freq, d):
    """kvpress apply_avg_rope literally (HF rotary cos/sin, rotate_half as the P matrix)."""
    freqs = np.outer(positions, inv_freq)            # [F, d/2]
    emb = np.concatenate([freqs, freqs], axis=-1)   # HF duplicates the frequencies
    cos, sin = np.cos(emb), np.sin(emb)
    Id = np.eye(d)
    P = np.zeros((d, d))
    P[d // 2:, : d // 2], P[: d // 2, d // 2:] = np.eye(d // 2), -np.eye(d // 2)
    R = cos[:, :, None] * Id + sin[:, :, None] * P
    return R.mean(axis=0)


def expected_attention(q_pre, keys, values, inv_freq, n_rot, neox, n_prefix, n_future, n_sink, eps,
                       use_cov=True, use_vnorm=True):
    H, T, d = q_pre.shape
    n_kv, N, _ = keys.shape
    G = H // n_kv
    q = q_pre[:, n_sink:, :].astype(np.float64)  # kvpress drops the first n_sink hidden states
    mu = q.mean(axis=1)                            # [H, d]
    cen = q - mu[:, None, :]
    cov = np.einsum("hsi,hsj->hij", cen, cen) / q.shape[1]
    positions = np.arange(N, N + n_future)
    Rbar = np.mean([rope_matrix(p, inv_freq, d, n_rot, neox) for p in positions], axis=0)
    if neox and n_rot == d:
        assert np.allclose(Rbar, kvpress_rotation_neox(positions, np.asarray(inv_freq, np.float64), d))
    mu = mu @ Rbar.T
    cov = np.einsum("ij,hjk,lk->hil", Rbar, cov, Rbar)
    k = repeat_kv(keys[:, n_sink:, :].astype(np.float64), G)   # [H, N', d]
    v = values[:, n_sink:, :].astype(np.float64)
    scores = np.einsum("hd,hnd->hn", mu, k) / math.sqrt(d)
    if use_cov:
        scores = scores + np.einsum("hni,hij,hnj->hn", k, cov, k) / d / 2
    scores = scores - scores.max(axis=-1, keepdims=True)
    scores = np.exp(scores)
    scores = scores / scores.sum(axis=-1, keepdims=True)
    scores = scores.reshape(n_kv, G, -1).mean(axis=1)
    if use_vnorm:
        scores = (scores + eps) * np.linalg.norm(v, axis=-1)
    scores = np.concatenate([np.full((n_kv, n_sink), scores.max()), scores], axis=-1)
    return scores[:, :n_prefix]


def apply_rope_rows(x, pos0, inv_freq, d, n_rot, neox):
    """x [H, T, d] pre-RoPE -> post-RoPE with row t at position pos0 + t."""
    out = np.empty_like(x, dtype=np.float64)
    for t in range(x.shape[1]):
        out[:, t, :] = x[:, t, :].astype(np.float64) @ rope_matrix(pos0 + t, inv_freq, d, n_rot, neox).T
    return out


# ---------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------

def adjust_budgets(budget_list, total_budget, seq_len, layer_nums):
    # cake/utils.py, verbatim
    budget_list = np.array(budget_list, dtype=int)
    excess = np.maximum(budget_list - seq_len, 0)
    budget_list = np.minimum(budget_list, seq_len)
    total_excess = np.sum(excess)
    if total_excess > 0:
        valid_indices = budget_list < seq_len
        num_valid = np.sum(valid_indices)
        if num_valid > 0:
            distribute_per_layer = total_excess // num_valid
            remainder = total_excess % num_valid
            budget_list[valid_indices] += distribute_per_layer
            budget_list[np.where(valid_indices)[0][:remainder]] += 1
    current_total_budget = np.sum(budget_list)
    budget_diff = total_budget - current_total_budget
    if budget_diff != 0:
        if budget_diff > 0:
            valid_indices = budget_list < seq_len
        else:
            valid_indices = budget_list > 1
        num_valid = np.sum(valid_indices)
        if num_valid > 0:
            adjust_per_layer = abs(budget_diff) // num_valid
            remainder = abs(budget_diff) % num_valid
            if budget_diff > 0:
                budget_list[valid_indices] += adjust_per_layer
                budget_list[np.where(valid_indices)[0][:remainder]] += 1
            else:
                budget_list[valid_indices] -= adjust_per_layer
                budget_list[np.where(valid_indices)[0][:remainder]] -= 1
    return budget_list.tolist()


def raw_split(prefs, total, f32):
    if f32:
        ps = [np.float32(p) for p in prefs]   # numpy float32 scalars, as .cpu().numpy() gives
        s = sum(ps)
        return [float(p / s * np.float32(total)) for p in ps]
    s = sum(prefs)
    return [p / s * total for p in prefs]


def cake_shares(prefs, C, W, L, N, f32):
    total = (C - W) * L
    raw = raw_split(prefs, total, f32)
    adj = adjust_budgets(raw, total, N - W, L)
    return [min(max(b, 0), N - W) for b in adj]


def pyramid(C, W, L, N, beta=20):
    """Per-layer prefix budgets of PyramidKVCluster.update_kv; None = no compression."""
    out = []
    for layer_idx in range(L):
        min_num = (C - W) // beta
        max_num = (C - W) * 2 - min_num
        if max_num >= N - W:
            max_num = N - W
            min_num = (C - W) * 2 - max_num
        steps = (max_num - min_num) // (L - 1)
        cap = max_num - layer_idx * steps
        if N < C:
            return None
        elif N < (C - W) * 2:
            out.append(C - W)
        else:
            out.append(cap)
    return out


# ---------------------------------------------------------------------------------------------

def topk_sorted(scores, b):
    """indices of the b largest, ties to the lower index, ascending."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return sorted(order[:b])


# ---------------------------------------------------------------------------------------------
# query-head granularity: the official harness on a tiny model
# ---------------------------------------------------------------------------------------------

def harness_keep(q, k, W, prefix_budget, scorer, kind="avg", ksize=5):
    """One layer of the harness's update_kv after repeat_kv: q [H, N, d] and k [H_kv, N, d] post-RoPE.

    snapkv / pyramidkv: attention of the last W queries (W x W corner causal), summed over those rows
    for the first N - W keys, pooled (avg_pool1d / max_pool1d, padding k//2); h2o: every query row
    (N <= its 512 rows), only the W x W corner masked (H2OKVCluster's mask), summed, no pooling.
    Then per query head topk(prefix_budget) of those scores plus the W window rows, always kept.
    Returns (scores [H, N - W], keep-sets [H][sorted positions], cut margins [H])."""
    N = k.shape[1]
    if scorer == "h2o":
        A = window_attention(q, k, W)                  # rows = all N queries
        s = A[:, :, :-W].sum(axis=1)
    else:
        A = window_attention(q[:, -W:, :], k, W)
        s = pool(A[:, -W:, :-W].sum(axis=1), kind, ksize)
    keep, margin = [], []
    for h in range(s.shape[0]):
        keep.append(topk_sorted(s[h].tolist(), prefix_budget) + list(range(N - W, N)))
        margin.append(cut_margin(s[h], prefix_budget))
    return s, keep, margin


def cut_margin(s, b):
    """How firmly the top-b cut of s is decided: the gap between the distinct values at the cut.

    A cut between two different values needs them apart. A cut inside a run of exactly equal values
    (max pooling copies one value to up to k neighbours) is decided by position, ties to the lower
    index, in both implementations; it needs the run's value apart from the values next to it.
    inf when nothing is dropped or nothing kept."""
    if not 0 < b < len(s):
        return math.inf
    o = np.sort(s)[::-1]
    dv = np.unique(o)[::-1]
    i = int(np.nonzero(dv == o[b - 1])[0][0])
    gaps = [dv[i] - dv[i + 1]] if i + 1 < len(dv) else []
    if o[b] == o[b - 1] and i > 0:
        gaps.append(dv[i - 1] - dv[i])
    return float(min(gaps)) if gaps else math.inf


def query_head_case():
    """qwen2_tiny (F32 weights, 2 layers, 4 query heads over 2 KV heads, head_dim 16) on a 48-token
    prompt, W = 8, C = 24: every query head's kept positions and scores for four methods. The
    prompt is the first seeded one whose every cut is decided by a margin far above the float32
    error of the engine's forward (see the C++ test), so the keep-sets compare exactly."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "scripts"))
    import make_tiny_models   # noqa: E402  (byte-for-byte reproducible models)
    import tiny_reference     # noqa: E402
    spec = next(s for s in make_tiny_models.SPECS if s.name == "qwen2_tiny")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, spec.name + ".gguf")
        make_tiny_models.write_gguf(spec, path)
        m = tiny_reference.GgufModel(path)
    L, H, H_kv, hd = m.n_layer, m.n_head, m.n_head_kv, m.head_dim
    N, W, C = 48, 8, 24
    methods = [  # (spec string for the library, scorer, pooling, kernel)
        ("snapkv:pool=avg5", "snapkv", "avg", 5),    # SnapKVCluster's defaults
        ("snapkv:pool=max7", "snapkv", "max", 7),    # the TAPPA harness's SnapKV setting
        ("h2o:h2o-official-mask=1", "h2o", None, 0),
        ("pyramidkv", "pyramidkv", "avg", 5),
    ]
    budgets = {"snapkv": [C - W] * L, "h2o": [C - W] * L, "pyramidkv": pyramid(C, W, L, N)}
    rng = np.random.default_rng(20260207)
    for attempt in range(200):
        tokens = [int(t) for t in rng.integers(0, make_tiny_models.N_VOCAB - len(spec.specials), size=N)]
        qk = {}
        tiny_reference.forward(m, tokens, on_qk=lambda l, q, k: qk.__setitem__(l, (q.transpose(1, 0, 2), k.transpose(1, 0, 2))))
        out, worst = [], math.inf
        for name, scorer, kind, ksize in methods:
            layers = []
            for l in range(L):
                q, k = qk[l]
                s, keep, margin = harness_keep(q, k, W, budgets[scorer][l], scorer, kind, ksize)
                # Relative to the layer's score scale: the engine's errors scale with the scores.
                worst = min(worst, min(margin) / float(np.max(s)))
                layers.append({"prefix_budget": budgets[scorer][l], "keep": keep,
                               "scores": [[float("%.10g" % x) for x in row] for row in s]})
            out.append({"spec": name, "layers": layers})
        if worst > 1e-3:
            break
    else:
        raise SystemExit("kv_reference.py: no prompt with decided cuts")
    return {"model": spec.name, "tokens": tokens, "N": N, "W": W, "C": C, "n_layer": L, "H": H, "H_kv": H_kv,
            "head_dim": hd, "min_relative_margin": worst, "attempts": attempt + 1, "methods": out}


def main():
    out = {"generator": "tests/kv_reference.py", "cases": {}}
    cases = out["cases"]

    # --- window attention and attention scorers -----------------------------------------------
    att = []
    for (H, n_kv, d, N, W) in [(4, 2, 8, 24, 4), (6, 3, 8, 28, 8), (2, 2, 4, 9, 3)]:
        q = f32((H, W, d), 1.5)
        k = f32((n_kv, N, d), 1.5)
        A = window_attention(q, k, W)
        P = N - W
        c = {"H": H, "H_kv": n_kv, "d": d, "N": N, "W": W, "q": inp(q), "k": inp(k), "attention": lst(A)}
        c["snapkv_avg5_sum"] = lst(snapkv(A, n_kv, W, "avg", 5))
        c["snapkv_max7_sum"] = lst(snapkv(A, n_kv, W, "max", 7))
        c["snapkv_avg5_mean"] = lst(snapkv(A, n_kv, W, "avg", 5, mean_rows=True))
        c["snapkv_none_sum"] = lst(snapkv(A, n_kv, W, "none", 1))
        c["cake_g200_avg5"] = lst(cake_token(A, n_kv, W, 200.0))
        c["cake_g0_none"] = lst(cake_token(A, n_kv, W, 0.0, "none", 1))
        ent, var = cake_stats(A, W)
        c["cake_entropy"], c["cake_variance"] = ent, var
        c["cake_pref_tau_1.6_0.4"] = ent ** (1 / 1.6) * var ** (1 / 0.4)
        c["P"] = P
        att.append(c)
    cases["attention"] = att

    # H2O: the last R rows, corner masks of size W (official quirk) and R (causal).
    h = []
    for (H, n_kv, d, N, R, W) in [(4, 2, 8, 24, 12, 4), (2, 1, 8, 16, 16, 5)]:
        q = f32((H, R, d), 1.5)
        k = f32((n_kv, N, d), 1.5)
        A_quirk = window_attention(q, k, W)
        A_causal = window_attention(q, k, R)
        h.append({"H": H, "H_kv": n_kv, "d": d, "N": N, "R": R, "W": W, "q": inp(q), "k": inp(k),
                  "attention_quirk": lst(A_quirk), "attention_causal": lst(A_causal),
                  "h2o_quirk": lst(h2o(A_quirk, n_kv, W)), "h2o_causal": lst(h2o(A_causal, n_kv, W))})
    cases["h2o"] = h

    # --- knorm ---------------------------------------------------------------------------------
    k = f32((3, 10, 8))
    cases["knorm"] = {"H_kv": 3, "N": 10, "d": 8, "P": 7, "k": inp(k),
                      "scores": lst(-np.linalg.norm(k.astype(np.float64), axis=-1)[:, :7])}

    # --- expected attention ------------------------------------------------------------------
    ea = []
    for (H, n_kv, d, N, n_rot, neox, base, n_future, n_sink, eps, use_cov, W) in [
            (4, 2, 8, 20, 8, True, 10000.0, 512, 4, 0.0, True, 4),
            (4, 2, 8, 20, 6, False, 100.0, 64, 4, 1e-4, True, 4),
            (2, 1, 8, 12, 8, False, 10000.0, 16, 2, 0.0, False, 3)]:
        q_pre = f32((H, N, d))
        keys = f32((n_kv, N, d))
        values = f32((n_kv, N, d))
        inv_freq = [base ** (-2.0 * i / n_rot) for i in range(n_rot // 2)]
        inv_freq = [float(np.float32(x)) for x in inv_freq]
        P = N - W
        s = expected_attention(q_pre, keys, values, inv_freq, n_rot, neox, P, n_future, n_sink, eps, use_cov)
        q_post = apply_rope_rows(q_pre, 0, inv_freq, d, n_rot, neox).astype(np.float32)
        ea.append({"H": H, "H_kv": n_kv, "d": d, "N": N, "W": W, "P": P, "n_rot": n_rot, "neox": neox,
                   "inv_freq": inv_freq, "n_future": n_future, "n_sink": n_sink, "epsilon": eps,
                   "use_covariance": use_cov, "q_pre": inp(q_pre), "q_post": inp(q_post), "keys": inp(keys),
                   "values": inp(values), "scores": lst(s)})
    cases["expected_attention"] = ea

    # --- adjust_budgets / proportional split ---------------------------------------------------
    adj = []
    # PAPER.md section 3.2 test vectors (L = 4, C = 128, W = 32).
    for prefs, N in [([0.1, 0.2, 0.3, 0.4], 300), ([0.05, 0.05, 0.1, 0.8], 232)]:
        for f in (False, True):
            raw = raw_split(prefs, 384, f)
            adj.append({"prefs": prefs, "total": 384, "cap": N - 32, "f32": f, "raw": raw,
                        "budgets": adjust_budgets(raw, 384, N - 32, 4)})
    for L, C, W, N in [(8, 128, 32, 400), (12, 64, 16, 90), (6, 1024, 32, 1500), (10, 200, 32, 250)]:
        prefs = (RNG.gamma(0.7, 1.0, L) + 1e-3).tolist()
        total = (C - W) * L
        for f in (False, True):
            raw = raw_split(prefs, total, f)
            adj.append({"prefs": prefs, "total": total, "cap": N - W, "f32": f, "raw": raw,
                        "budgets": adjust_budgets(raw, total, N - W, L)})
    cases["adjust_budgets"] = adj

    # Cascading: the shares after each layer with the prefs seen so far.
    casc = []
    for L, C, W, N in [(6, 96, 16, 300), (5, 64, 8, 70)]:
        prefs = (RNG.gamma(1.0, 1.0, L) + 1e-3).tolist()
        casc.append({"L": L, "C": C, "W": W, "N": N, "prefs": prefs,
                     "f64": [cake_shares(prefs[: l + 1], C, W, L, N, False) for l in range(L)],
                     "f32": [cake_shares(prefs[: l + 1], C, W, L, N, True) for l in range(L)]})
    cases["cascading"] = casc

    # --- PyramidKV ------------------------------------------------------------------------------
    pyr = []
    for C, W, L, N in [(128, 32, 30, 4096), (128, 32, 30, 200), (128, 32, 30, 150), (128, 32, 30, 100),
                       (2048, 32, 32, 5000), (512, 32, 28, 1000), (64, 8, 4, 130)]:
        pyr.append({"C": C, "W": W, "L": L, "N": N, "budgets": pyramid(C, W, L, N)})
    cases["pyramidkv"] = pyr

    # --- decode eviction ------------------------------------------------------------------------
    dec = []
    for G, n, b, W in [(2, 20, 6, 4), (4, 40, 10, 8), (1, 12, 3, 2)]:
        logits = RNG.standard_normal((G, n)) * 2
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        probs = probs.astype(np.float32)
        sc = pool(probs[:, : n - W].astype(np.float64), "avg", 5).mean(axis=0)
        keep = topk_sorted(sc.tolist(), b) + list(range(n - W, n))
        dec.append({"G": G, "n": n, "budget": b, "W": W, "probs": inp(probs), "scores": lst(sc), "keep": keep})
    cases["decode"] = dec

    # Appended last: it draws nothing from RNG, so every case above keeps its values.
    cases["query_head"] = query_head_case()

    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
