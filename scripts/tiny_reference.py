#!/usr/bin/env python3
"""Independent fp64 numpy reference forward pass for llama-family GGUF models.

It reads a GGUF file with gguf.GGUFReader (metadata and raw tensor bytes only), decodes the weights
with its own code (F32, F16, Q8_0, Q4_0, Q4_1), and computes the logits at every position of a token
sequence in float64:

    x = token_embd[tokens]
    per layer:  h = rmsnorm(x) * attn_norm
                q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)      (biases when present: qwen2)
                rope(q), rope(k)   NORM layout for arch llama (pairs 2i, 2i+1),
                                   NEOX layout for arch qwen2 (pairs i, i + n_rot/2);
                                   theta_i = pos * base^(-2i/n_rot) / rope_freqs[i]  (rope_freqs.weight
                                   when the file has it, else 1)
                attention per head, causal, scale 1/sqrt(head_dim), query head h reads KV head
                h // (n_head / n_head_kv)
                x = x + attn Wo^T (+bo)
                h = rmsnorm(x) * ffn_norm
                x = x + (silu(h Wgate^T) * (h Wup^T)) Wdown^T
    logits = (rmsnorm(x) * output_norm) Woutput^T    (Woutput = token_embd when output.weight is absent)

This is a statement of what llama.cpp computes for these architectures, written from the model
definition, not from llama.cpp's code. It is used both to produce expected logits for the tiny test
models (scripts/make_tiny_models.py) and to check llama.cpp itself.

Usage as a script:
    tiny_reference.py MODEL.gguf --tokens 1,2,3 [--out expected.json]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from gguf import GGUFReader

# ggml type ids (the on-disk values)
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0 = 0, 1, 2, 3, 8


def _q4_1_mins(raw: np.ndarray, ne: list[int]) -> np.ndarray:
    """The per-block minimum m of a Q4_1 tensor, shaped (rows, blocks per row)."""
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, 20)
    m = b[:, 2:4].copy().view("<f2").astype(np.float64)
    return m.reshape(int(np.prod(ne[1:])), int(ne[0]) // 32)


def _decode_tensor(raw: np.ndarray, ggml_type: int, ne: list[int]) -> np.ndarray:
    """Raw tensor bytes -> float64 array shaped (ne[1], ne[0]) (rows, row length)."""
    n_row = int(ne[0])
    n_rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if ggml_type == GGML_F32:
        out = b.view("<f4").astype(np.float64)
    elif ggml_type == GGML_F16:
        out = b.view("<f2").astype(np.float64)
    elif ggml_type == GGML_Q8_0:
        # block of 32: f16 scale d, 32 x int8 q; x = d * q
        blk = b.reshape(-1, 34)
        d = blk[:, 0:2].copy().view("<f2").astype(np.float64)
        q = blk[:, 2:].copy().view(np.int8).astype(np.float64)
        out = (d * q).reshape(-1)
    elif ggml_type == GGML_Q4_0:
        # block of 32: f16 d, 16 bytes; element j < 16 is the low nibble of byte j, element j + 16 the
        # high nibble; x = d * (nibble - 8)
        blk = b.reshape(-1, 18)
        d = blk[:, 0:2].copy().view("<f2").astype(np.float64)
        qs = blk[:, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float64) - 8.0
        out = (d * q).reshape(-1)
    elif ggml_type == GGML_Q4_1:
        # block of 32: f16 d, f16 m, 16 bytes of nibbles (same order as Q4_0); x = d * nibble + m
        blk = b.reshape(-1, 20)
        d = blk[:, 0:2].copy().view("<f2").astype(np.float64)
        m = blk[:, 2:4].copy().view("<f2").astype(np.float64)
        qs = blk[:, 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float64)
        out = (d * q + m).reshape(-1)
    else:
        raise ValueError(f"tiny_reference: unsupported ggml type {ggml_type}")
    if out.size != n_row * n_rows:
        raise ValueError(f"tiny_reference: tensor size mismatch ({out.size} vs {n_row}x{n_rows})")
    return out.reshape(n_rows, n_row) if len(ne) > 1 else out


class GgufModel:
    def __init__(self, path: str):
        self.path = path
        r = GGUFReader(path)
        self.meta: dict[str, object] = {}
        for name, field in r.fields.items():
            if name.startswith("tokenizer.ggml.") and name not in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
                continue
            try:
                self.meta[name] = field.contents()
            except Exception:  # noqa: BLE001 - a field we do not need
                pass
        self.tensors: dict[str, np.ndarray] = {}
        self.types: dict[str, int] = {}
        self.q4_1_mins: dict[str, np.ndarray] = {}
        for t in r.tensors:
            ne = [int(x) for x in t.shape]
            self.tensors[t.name] = _decode_tensor(t.data, int(t.tensor_type), ne)
            self.types[t.name] = int(t.tensor_type)
            if int(t.tensor_type) == GGML_Q4_1:
                self.q4_1_mins[t.name] = _q4_1_mins(t.data, ne)
        self.arch = str(self.meta["general.architecture"])
        a = self.arch

        def key(k, default=None):
            v = self.meta.get(f"{a}.{k}", default)
            if v is None:
                raise KeyError(f"{path}: missing {a}.{k}")
            return v

        self.n_embd = int(key("embedding_length"))
        self.n_layer = int(key("block_count"))
        self.n_ff = int(key("feed_forward_length"))
        self.n_head = int(key("attention.head_count"))
        self.n_head_kv = int(key("attention.head_count_kv", self.n_head))
        self.head_dim = int(self.meta.get(f"{a}.attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(self.meta.get(f"{a}.rope.dimension_count", self.head_dim))
        self.rope_base = float(key("rope.freq_base", 10000.0))
        self.eps = float(key("attention.layer_norm_rms_epsilon"))
        if a in ("llama",):
            self.rope_layout = "norm"
        elif a in ("qwen2",):
            self.rope_layout = "neox"
        else:
            raise ValueError(f"tiny_reference: unsupported architecture {a}")
        if f"{a}.rope.scaling.type" in self.meta and self.meta[f"{a}.rope.scaling.type"] not in ("none",):
            raise ValueError("tiny_reference: rope scaling types are not supported")
        self.n_vocab = self.tensors["token_embd.weight"].shape[0]

    def w(self, name: str) -> np.ndarray | None:
        return self.tensors.get(name)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float, freq_factors: np.ndarray | None, layout: str) -> np.ndarray:
    """x: (T, H, D). Rotates the first n_rot dims of each head."""
    half = n_rot // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = base ** (-2.0 * i / n_rot)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors.reshape(-1)[:half]
    theta = pos.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, half)
    cos = np.cos(theta)[:, None, :]
    sin = np.sin(theta)[:, None, :]
    out = x.copy()
    if layout == "norm":
        x0 = x[..., 0:n_rot:2]
        x1 = x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x0 * cos - x1 * sin
        out[..., 1:n_rot:2] = x0 * sin + x1 * cos
    else:
        x0 = x[..., 0:half]
        x1 = x[..., half:n_rot]
        out[..., 0:half] = x0 * cos - x1 * sin
        out[..., half:n_rot] = x0 * sin + x1 * cos
    return out


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).astype(np.float16).astype(np.float64)


def _q8_blocks(x: np.ndarray):
    """ggml's activation quantization (q8_0 / q8_1 as the x86 code does it): per block of 32,
    q = round_half_even(x * (127 / amax)) in float32, d = f16(amax / 127).
    Returns (q, d_f32, d_f16), q shaped (rows, blocks, 32)."""
    x32 = x.astype(np.float32).reshape(x.shape[0], -1, 32)
    amax = np.max(np.abs(x32), axis=2, keepdims=True)
    with np.errstate(divide="ignore"):
        idv = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    q = np.rint(x32 * idv).astype(np.float64)
    d32 = (amax / np.float32(127.0)).astype(np.float32)
    d16 = d32.astype(np.float16).astype(np.float64)
    return q, d32.astype(np.float64), d16


def _ggml_matmul(m: GgufModel, h: np.ndarray, name: str) -> np.ndarray:
    """h @ W^T with the activation rounding ggml's CPU backend applies for W's type."""
    w = m.tensors[name]
    t = m.types[name]
    if t == GGML_F32:
        return h.astype(np.float32).astype(np.float64) @ w.T
    if t == GGML_F16:
        return _f16(h) @ w.T
    if t in (GGML_Q8_0, GGML_Q4_0, GGML_Q4_1):
        q, d32, d16 = _q8_blocks(h)
        xq = (q * d16).reshape(h.shape)
        y = xq @ w.T
        if t == GGML_Q4_1:
            # q8_1 carries s = f16(d * sum(q)); the Q4_1 dot uses m * s instead of m * d16 * sum(q).
            sq = q.sum(axis=2)
            s16 = (d32[..., 0] * sq).astype(np.float32).astype(np.float16).astype(np.float64)
            y = y + (s16 - d16[..., 0] * sq) @ m.q4_1_mins[name].T
        return y
    raise ValueError(f"tiny_reference: no ggml emulation for type {t}")


def forward(m: GgufModel, tokens: list[int], emulate_ggml: bool = False, kv_type: str = "f16",
            on_qk=None) -> np.ndarray:
    """fp64 logits, shape (len(tokens), n_vocab).

    on_qk(layer, q, k): called with each layer's post-RoPE queries (T, n_head, head_dim) and keys
    (T, n_head_kv, head_dim), for references of what is computed from them (tests/kv_reference.py).

    emulate_ggml=False: exact math on the stored weights (the expected logits of the tiny models).
    emulate_ggml=True:  also applies the roundings llama.cpp's CPU backend makes without flash
    attention: activations quantized to q8_0/q8_1 (or rounded to f16) before quantized (or F16)
    matmuls, K and V stored as kv_type, Q rounded to f16 for KQ and the softmax rounded to f16 for
    KQV when the cache is f16. Only for diagnosing how far llama.cpp is from the exact math."""
    T = len(tokens)
    pos = np.arange(T)
    x = m.tensors["token_embd.weight"][np.asarray(tokens)]  # (T, d)
    freq_factors = m.w("rope_freqs.weight")
    hd, H, Hkv = m.head_dim, m.n_head, m.n_head_kv
    group = H // Hkv
    mask = np.triu(np.full((T, T), -np.inf), k=1)

    def lin(h, name):
        y = _ggml_matmul(m, h, name + ".weight") if emulate_ggml else h @ m.tensors[name + ".weight"].T
        b = m.w(name + ".bias")
        return y + b if b is not None else y

    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = rms_norm(x, m.tensors[p + "attn_norm.weight"], m.eps)
        q = lin(h, p + "attn_q").reshape(T, H, hd)
        k = lin(h, p + "attn_k").reshape(T, Hkv, hd)
        v = lin(h, p + "attn_v").reshape(T, Hkv, hd)
        q = rope(q, pos, m.n_rot, m.rope_base, freq_factors, m.rope_layout)
        k = rope(k, pos, m.n_rot, m.rope_base, freq_factors, m.rope_layout)
        if on_qk is not None:
            on_qk(il, q, k)
        kv16 = emulate_ggml and kv_type == "f16"
        if kv16:
            k, v, q = _f16(k), _f16(v), _f16(q)
        attn = np.empty((T, H, hd))
        for hh in range(H):
            kv = hh // group
            s = (q[:, hh, :] @ k[:, kv, :].T) / np.sqrt(hd) + mask
            s = s - s.max(axis=1, keepdims=True)
            pr = np.exp(s)
            pr /= pr.sum(axis=1, keepdims=True)
            if kv16:
                pr = _f16(pr)
            attn[:, hh, :] = pr @ v[:, kv, :]
        x = x + lin(attn.reshape(T, H * hd), p + "attn_output")
        h = rms_norm(x, m.tensors[p + "ffn_norm.weight"], m.eps)
        g = lin(h, p + "ffn_gate")
        u = lin(h, p + "ffn_up")
        x = x + lin(g / (1.0 + np.exp(-g)) * u, p + "ffn_down")
    h = rms_norm(x, m.tensors["output_norm.weight"], m.eps)
    wout = m.w("output.weight")
    if wout is None:
        wout = m.tensors["token_embd.weight"]
    if emulate_ggml:
        logits = _ggml_matmul(m, h, "output.weight" if m.w("output.weight") is not None else "token_embd.weight")
    else:
        logits = h @ wout.T
    b = m.w("output.bias")
    return logits + b if b is not None else logits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", help="write {tokens, logits} JSON here (default stdout)")
    args = ap.parse_args()
    m = GgufModel(args.model)
    toks = [int(t) for t in args.tokens.split(",") if t.strip()]
    logits = forward(m, toks)
    doc = {"tokens": toks, "logits": [[float(f"{v:.9g}") for v in row] for row in logits]}
    text = json.dumps(doc, separators=(",", ":"))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
