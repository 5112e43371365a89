#!/usr/bin/env python3
"""Writes the small GGUF seed files of the gguf_fuzz target into a folder (model files are generated,
never committed; scripts/fuzz.sh runs this into build-fuzz/seeds/gguf_fuzz/ before fuzzing).

    python3 fuzz/make_seeds.py OUT_DIR

Seeds are kept tiny (a few KB) so that libFuzzer's mutations reach every field quickly: complete
one-layer llama and qwen2 models with an 8-token byte-level BPE vocabulary (all weights F32), a version-2 file, a header-only file with every metadata value type and nested arrays,
and a file with a non-default alignment. Uses the `gguf` Python package (the one the venv has).
"""
from __future__ import annotations

import os
import sys

import numpy as np
from gguf import GGUFWriter

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join("build-fuzz", "seeds", "gguf_fuzz")
TOKENS = ["<s>", "</s>", "a", "b", "c", "\u0120", "ab", "\u0120a"]
MERGES = ["a b", "\u0120 a"]
N_EMBD, N_HEAD, N_HEAD_KV, N_FF = 8, 2, 1, 16


def tokenizer(w: GGUFWriter) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(TOKENS)
    w.add_token_types([3, 3] + [1] * (len(TOKENS) - 2))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)


def model(name: str, arch: str, version2: bool = False, alignment: int | None = None) -> None:
    rng = np.random.default_rng(len(name))
    path = os.path.join(OUT, name)
    w = GGUFWriter(path, arch)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name(name)
    w.add_block_count(1)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_context_length(64)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    tokenizer(w)
    hd = N_EMBD // N_HEAD
    shapes = {  # numpy order (rows, cols); GGUF stores them reversed
        "token_embd.weight": (len(TOKENS), N_EMBD),
        "output_norm.weight": (N_EMBD,),
        "blk.0.attn_norm.weight": (N_EMBD,),
        "blk.0.attn_q.weight": (N_HEAD * hd, N_EMBD),
        "blk.0.attn_k.weight": (N_HEAD_KV * hd, N_EMBD),
        "blk.0.attn_v.weight": (N_HEAD_KV * hd, N_EMBD),
        "blk.0.attn_output.weight": (N_EMBD, N_HEAD * hd),
        "blk.0.ffn_norm.weight": (N_EMBD,),
        "blk.0.ffn_gate.weight": (N_FF, N_EMBD),
        "blk.0.ffn_up.weight": (N_FF, N_EMBD),
        "blk.0.ffn_down.weight": (N_EMBD, N_FF),
    }
    if arch == "qwen2":
        shapes["blk.0.attn_q.bias"] = (N_HEAD * hd,)
        shapes["blk.0.attn_k.bias"] = (N_HEAD_KV * hd,)
        shapes["blk.0.attn_v.bias"] = (N_HEAD_KV * hd,)
    for tname, shape in shapes.items():
        x = rng.standard_normal(shape).astype(np.float32)
        w.add_tensor(tname, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version2:  # same layout; only the version field differs between v2 and v3
        with open(path, "r+b") as f:
            f.seek(4)
            f.write((2).to_bytes(4, "little"))


def header_only() -> None:
    w = GGUFWriter(os.path.join(OUT, "metadata_types.gguf"), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -7)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo")
    w.add_uint64("t.u64", 2**63)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", -2.25)
    w.add_array("t.arr", [1, 2, 3])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_array("t.strs", ["x", "", "yz"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    model("llama_f32.gguf", "llama")
    model("qwen2_f32.gguf", "qwen2")
    model("llama_v2.gguf", "llama", version2=True)
    model("llama_align64.gguf", "llama", alignment=64)
    header_only()
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))
