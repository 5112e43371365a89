#!/usr/bin/env python3
"""Writes tiny random-weight GGUF models and their fp64 reference logits.

    scripts/make_tiny_models.py --out DIR [--check-oracle DUMP_LOGITS]

For each model NAME it writes DIR/NAME.gguf and DIR/NAME.expected.json. The weights are drawn from a
seeded numpy generator, so the files are byte-for-byte reproducible. The expected logits come from
scripts/tiny_reference.py, an independent numpy forward pass that reads the written GGUF back.

Models (all: 2 layers, d_model 64, ffn 128, head dim 16, 4 query heads / 2 KV heads, vocab 300
byte-level BPE, tokenizer.ggml.model = gpt2):

  qwen2_tiny    arch qwen2: Q/K/V biases, NEOX rope (pairs i, i+8), rope base 1e6, untied output.weight,
                pre-tokenizer "qwen2", rms eps 1e-6, all weights F32.
  llama3_tiny   arch llama, Llama-3 style: NORM rope (pairs 2i, 2i+1), rope base 500000, rope_freqs.weight
                with the llama3 factors (factor 8, low_freq_factor 1, high_freq_factor 4, original
                context 8192), tied embeddings (no output.weight), pre-tokenizer "llama-bpe", rms eps
                1e-5, all weights F32.
  smol_tiny   arch llama, SmolLM style: NORM rope, base 100000, no rope_freqs, tied embeddings,
                pre-tokenizer "smollm", special tokens first; token_embd, attn_v, attn_output, ffn_gate,
                ffn_up Q8_0; attn_q, attn_k, ffn_down F16; norms F32.

DIR/NAME.expected.json = {"model": "NAME.gguf", "arch": ..., "tokens": [24 ids],
                          "logits": [[n_vocab floats] x 24], "precision": "fp64", ...}
logits[i] are the logits after tokens[0..i] (position i), computed in float64 from the weights as
stored in the file (quantized weights dequantized exactly). For models with F16/Q8_0 weights there is
also "logits_ggml": the same, but with activations rounded the way ggml's CPU matmuls round them
(q8_0 before Q8_0 weights, f16 before F16 weights), attention in full precision.

--check-oracle DUMP_LOGITS runs llama.cpp (scripts/oracle/dump_logits) on each model with the same
tokens and prints the max |logit difference| against the reference, in two llama.cpp settings:
f32 K/V cache without flash attention (tight) and llama.cpp's defaults (f16 K/V, flash attention auto).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf  # noqa: E402
from gguf import GGMLQuantizationType, GGUFWriter  # noqa: E402

import tiny_reference  # noqa: E402

N_VOCAB = 300
N_EMBD = 64
N_FF = 128
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD  # 16
N_TOKENS = 24
CTX_LEN = 512

# ---------------------------------------------------------------------------------------------------
# Tokenizer: GPT-2 style byte-level BPE with a few merges learned from a short text.
# ---------------------------------------------------------------------------------------------------

TRAIN_TEXT = (
    "the cat sat on the mat and the dog sat on the log. "
    "then the cat and the dog ran in the rain to the barn, "
    "where the hen and the ten men were eating their dinner in the warm hall. "
    "int main() { return 0; } def main(): return None "
)


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte -> printable character table: printable Latin-1 bytes map to themselves, the
    rest to code points 256 and up, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def learn_merges(n_merges: int) -> list[tuple[str, str]]:
    """A deterministic toy BPE trainer: words split on spaces (a space joins the following word, as
    'Ġword'), repeatedly merge the most frequent adjacent pair (ties: lexicographically smallest)."""
    b2u = bytes_to_unicode()
    words = []
    for i, w in enumerate(TRAIN_TEXT.split(" ")):
        if not w:
            continue
        raw = (" " + w if i > 0 else w).encode("utf-8")
        words.append(tuple(b2u[b] for b in raw))
    counts = Counter(words)
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, c in counts.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        new_counts: Counter = Counter()
        for w, c in counts.items():
            out = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_counts[tuple(out)] += c
        counts = new_counts
    return merges


def build_vocab(specials: list[str], specials_first: bool) -> tuple[list[str], list[int], list[str]]:
    """Returns (tokens, token types, merges) with exactly N_VOCAB tokens: the 256 byte tokens in byte
    order, the merged tokens, and the special tokens (type CONTROL) first or last."""
    b2u = bytes_to_unicode()
    byte_tokens = [b2u[b] for b in range(256)]
    merges = learn_merges(N_VOCAB - 256 - len(specials))
    merged = []
    for a, b in merges:
        t = a + b
        if t in merged or t in byte_tokens:
            raise RuntimeError(f"duplicate merged token {t!r}")
        merged.append(t)
    if 256 + len(merged) + len(specials) != N_VOCAB:
        raise RuntimeError("the training text gave too few merges for the vocabulary size")
    normal = byte_tokens + merged
    if specials_first:
        tokens = specials + normal
        types = [int(gguf.TokenType.CONTROL)] * len(specials) + [int(gguf.TokenType.NORMAL)] * len(normal)
    else:
        tokens = normal + specials
        types = [int(gguf.TokenType.NORMAL)] * len(normal) + [int(gguf.TokenType.CONTROL)] * len(specials)
    return tokens, types, [f"{a} {b}" for a, b in merges]


# ---------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------

def quantize_q8_0(w: np.ndarray) -> np.ndarray:
    """ggml Q8_0: per block of 32 consecutive row elements, d = max|x| / 127 stored as f16, then
    32 int8 q = round(x / d) (round half away from zero, as ggml's reference quantizer). Returns the
    raw bytes shaped (rows, row_len / 32 * 34)."""
    rows, n = w.shape
    assert n % 32 == 0
    x = w.astype(np.float32).reshape(rows, n // 32, 32)
    amax = np.max(np.abs(x), axis=2, keepdims=True)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    v = x * inv
    q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)
    out = np.empty((rows, n // 32, 34), dtype=np.uint8)
    out[:, :, 0:2] = d.astype("<f2").view(np.uint8).reshape(rows, n // 32, 2)
    out[:, :, 2:] = q.view(np.uint8)
    return out.reshape(rows, (n // 32) * 34)


def llama3_rope_factors(base: float, dim: int, factor: float = 8.0, low_freq_factor: float = 1.0,
                        high_freq_factor: float = 4.0, old_context_len: int = 8192) -> np.ndarray:
    """Llama 3 frequency factors (what llama.cpp's converter writes to rope_freqs.weight): 1 for
    high-frequency dims (wavelength < old_ctx / high_freq_factor), `factor` for low-frequency dims
    (wavelength > old_ctx / low_freq_factor), a smooth interpolation in between. theta_i is divided
    by these factors."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    low_wl = old_context_len / low_freq_factor
    high_wl = old_context_len / high_freq_factor
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old_context_len / wl - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


class Spec:
    def __init__(self, name, arch, pre, specials, specials_first, bos, eos, rope_base, eps, seed,
                 qkv_bias=False, tied=True, rope_freqs=False, types=None, add_bos=False, chat_template=None,
                 qk_scale=2.0):
        self.name, self.arch, self.pre = name, arch, pre
        self.specials, self.specials_first = specials, specials_first
        self.bos, self.eos = bos, eos
        self.rope_base, self.eps, self.seed = rope_base, eps, seed
        self.qkv_bias, self.tied, self.rope_freqs = qkv_bias, tied, rope_freqs
        self.types = types or {}
        self.add_bos = add_bos
        self.chat_template = chat_template
        # Scale of the Q/K projections: 2 gives peaked attention (a sharper test of RoPE and masking);
        # the quantized model uses 1 so that the activation rounding of Q8_0/F16 matmuls moves its
        # logits by only ~1% of their scale.
        self.qk_scale = qk_scale


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

SPECS = [
    Spec("qwen2_tiny", "qwen2", "qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False,
         bos=297, eos=297, rope_base=1000000.0, eps=1e-6, seed=1001, qkv_bias=True, tied=False,
         add_bos=False, chat_template=CHATML),
    Spec("llama3_tiny", "llama", "llama-bpe", ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], False,
         bos=297, eos=298, rope_base=500000.0, eps=1e-5, seed=2002, tied=True, rope_freqs=True, add_bos=True),
    Spec("smol_tiny", "llama", "smollm", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], True,
         bos=1, eos=2, rope_base=100000.0, eps=1e-5, seed=3003, tied=True, add_bos=False, chat_template=CHATML,
         qk_scale=1.0,
         types={"token_embd": "Q8_0", "attn_q": "F16", "attn_k": "F16", "attn_v": "Q8_0",
                "attn_output": "Q8_0", "ffn_gate": "Q8_0", "ffn_up": "Q8_0", "ffn_down": "F16"}),
]


def make_weights(spec: Spec) -> dict[str, np.ndarray]:
    """float32 weights in numpy (out, in) orientation, drawn in a fixed order from one generator."""
    rng = np.random.default_rng(spec.seed)
    d, ff, kvd = N_EMBD, N_FF, N_HEAD_KV * HEAD_DIM

    def mat(rows, cols, scale=1.0):
        return (rng.standard_normal((rows, cols)) * scale / math.sqrt(cols)).astype(np.float32)

    def norm_w(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w: dict[str, np.ndarray] = {}
    w["token_embd.weight"] = (rng.standard_normal((N_VOCAB, d)) * 0.5).astype(np.float32)
    for il in range(N_LAYER):
        p = f"blk.{il}."
        w[p + "attn_norm.weight"] = norm_w(d)
        w[p + "attn_q.weight"] = mat(d, d, spec.qk_scale)
        w[p + "attn_k.weight"] = mat(kvd, d, spec.qk_scale)
        w[p + "attn_v.weight"] = mat(kvd, d)
        if spec.qkv_bias:
            w[p + "attn_q.bias"] = (0.1 * rng.standard_normal(d)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.1 * rng.standard_normal(kvd)).astype(np.float32)
            w[p + "attn_v.bias"] = (0.1 * rng.standard_normal(kvd)).astype(np.float32)
        w[p + "attn_output.weight"] = mat(d, d)
        w[p + "ffn_norm.weight"] = norm_w(d)
        w[p + "ffn_gate.weight"] = mat(ff, d)
        w[p + "ffn_up.weight"] = mat(ff, d)
        w[p + "ffn_down.weight"] = mat(d, ff)
    w["output_norm.weight"] = norm_w(d)
    if not spec.tied:
        w["output.weight"] = mat(N_VOCAB, d, 2.0)
    if spec.rope_freqs:
        w["rope_freqs.weight"] = llama3_rope_factors(spec.rope_base, HEAD_DIM)
    return w


def tensor_kind(name: str) -> str:
    # "blk.0.attn_q.weight" -> "attn_q"; "token_embd.weight" -> "token_embd"
    parts = name.split(".")
    return parts[2] if parts[0] == "blk" else parts[0]


def write_gguf(spec: Spec, path: str) -> None:
    tokens, ttypes, merges = build_vocab(spec.specials, spec.specials_first)
    wr = GGUFWriter(path, spec.arch)
    a = spec.arch
    wr.add_name(spec.name)
    wr.add_uint32(f"{a}.context_length", CTX_LEN)
    wr.add_uint32(f"{a}.embedding_length", N_EMBD)
    wr.add_uint32(f"{a}.block_count", N_LAYER)
    wr.add_uint32(f"{a}.feed_forward_length", N_FF)
    wr.add_uint32(f"{a}.attention.head_count", N_HEAD)
    wr.add_uint32(f"{a}.attention.head_count_kv", N_HEAD_KV)
    wr.add_float32(f"{a}.rope.freq_base", spec.rope_base)
    wr.add_float32(f"{a}.attention.layer_norm_rms_epsilon", spec.eps)
    if a == "llama":
        wr.add_uint32(f"{a}.rope.dimension_count", HEAD_DIM)
        wr.add_uint32(f"{a}.vocab_size", N_VOCAB)
    wr.add_uint32("general.file_type", 7 if spec.types else 0)  # 7 = MOSTLY_Q8_0, 0 = ALL_F32
    wr.add_uint32("general.quantization_version", 2)
    wr.add_string("tokenizer.ggml.model", "gpt2")
    wr.add_string("tokenizer.ggml.pre", spec.pre)
    wr.add_array("tokenizer.ggml.tokens", tokens)
    wr.add_array("tokenizer.ggml.token_type", ttypes)
    wr.add_array("tokenizer.ggml.merges", merges)
    wr.add_uint32("tokenizer.ggml.bos_token_id", spec.bos)
    wr.add_uint32("tokenizer.ggml.eos_token_id", spec.eos)
    wr.add_bool("tokenizer.ggml.add_bos_token", spec.add_bos)
    if spec.chat_template:
        wr.add_string("tokenizer.chat_template", spec.chat_template)

    for name, arr in make_weights(spec).items():
        kind = tensor_kind(name)
        qtype = spec.types.get(kind, "F32") if name.endswith(".weight") and arr.ndim == 2 else "F32"
        if qtype == "F32":
            wr.add_tensor(name, arr.astype(np.float32))
        elif qtype == "F16":
            wr.add_tensor(name, arr.astype(np.float16))
        elif qtype == "Q8_0":
            raw = quantize_q8_0(arr)
            wr.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            raise ValueError(qtype)

    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def fixed_tokens(spec: Spec) -> list[int]:
    """24 ids: BOS, then a seeded mix of byte and merged tokens, with a special token inside."""
    rng = np.random.default_rng(spec.seed + 7)
    n_special = len(spec.specials)
    lo = n_special if spec.specials_first else 0
    hi = N_VOCAB if spec.specials_first else N_VOCAB - n_special
    ids = [int(spec.bos)] + [int(x) for x in rng.integers(lo, hi, size=N_TOKENS - 1)]
    ids[12] = int(spec.eos)  # a control token mid-sequence: just another embedding row to the model
    return ids


def write_expected(spec: Spec, gguf_path: str, json_path: str) -> list[int]:
    toks = fixed_tokens(spec)
    model = tiny_reference.GgufModel(gguf_path)
    logits = tiny_reference.forward(model, toks)
    quantized = any(t != tiny_reference.GGML_F32 for t in model.types.values())
    doc = {
        "model": os.path.basename(gguf_path),
        "arch": spec.arch,
        "precision": "fp64",
        "reference": "scripts/tiny_reference.py",
        "n_vocab": N_VOCAB,
        "tokens": toks,
        "logits": [[float(f"{v:.9g}") for v in row] for row in logits],
    }
    if quantized:
        # The same forward pass with the activation roundings llama.cpp's CPU matmuls make (q8_0 before
        # Q8_0 weights, f16 before F16 weights), attention in full precision. An engine that quantizes
        # activations the way ggml does lands here to ~1e-5, except where one value falls on the
        # other side of a rounding boundary (then ~0.1).
        emu = tiny_reference.forward(model, toks, emulate_ggml=True, kv_type="f32")
        doc["logits_ggml"] = [[float(f"{v:.9g}") for v in row] for row in emu]
    with open(json_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    return toks


def check_oracle(dump_logits: str, gguf_path: str, json_path: str) -> dict[str, float]:
    exp = json.load(open(json_path))
    ref = np.array(exp["logits"], dtype=np.float64)
    toks = ",".join(str(t) for t in exp["tokens"])
    out = {}
    for label, extra in (("f32kv_nofa", ["--kv-type", "f32", "--flash-attn", "off"]),
                         ("default", [])):
        cmd = [dump_logits, "-m", gguf_path, "--tokens", toks, "-n", "0", "-g", "0", "--full-logits"] + extra
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        got = np.array([p["logits"] for p in json.loads(res.stdout)["positions"]], dtype=np.float64)
        out[label] = float(np.max(np.abs(got - ref)))
        out[label + "_argmax_agree"] = float(np.mean(got.argmax(1) == ref.argmax(1)))
        if label == "f32kv_nofa" and "logits_ggml" in exp:
            out["ggml_emulated"] = float(np.max(np.abs(got - np.array(exp["logits_ggml"], dtype=np.float64))))
    out["logit_absmax"] = float(np.max(np.abs(ref)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--check-oracle", metavar="DUMP_LOGITS", help="compare llama.cpp's logits with the reference")
    ap.add_argument("--only", help="comma-separated model names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    for spec in SPECS:
        if only and spec.name not in only:
            continue
        gpath = os.path.join(args.out, spec.name + ".gguf")
        jpath = os.path.join(args.out, spec.name + ".expected.json")
        write_gguf(spec, gpath)
        write_expected(spec, gpath, jpath)
        print(f"make_tiny_models.py: wrote {gpath} and {jpath}")
        if args.check_oracle:
            r = check_oracle(args.check_oracle, gpath, jpath)
            print(f"  llama.cpp vs numpy fp64: max|dlogit| f32 KV/no FA = {r['f32kv_nofa']:.3g} "
                  f"(argmax agree {r['f32kv_nofa_argmax_agree']:.0%}), llama.cpp defaults = {r['default']:.3g} "
                  f"(argmax agree {r['default_argmax_agree']:.0%}); max|logit| = {r['logit_absmax']:.3g}")
            if "ggml_emulated" in r:
                print(f"  llama.cpp (f32 KV, no FA) vs logits_ggml (activation rounding emulated): "
                      f"max|dlogit| = {r['ggml_emulated']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
