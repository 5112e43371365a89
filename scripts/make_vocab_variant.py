#!/usr/bin/env python3
"""Writes a copy of a GGUF model whose tokenizer metadata names another pre-tokenizer.

Used to produce oracle (llama.cpp) golden token ids for pre-tokenizers whose models we do not ship
("llama-bpe", "qwen2"): the same vocabulary and merges, tokenized with another split pattern. All
metadata and tensors are copied unchanged except:
  --pre NAME       replaces tokenizer.ggml.pre
  --drop-key KEY   removes a key (repeatable), e.g. tokenizer.ggml.add_bos_token so that the
                   pre-tokenizer's default BOS rule applies

Usage: scripts/make_vocab_variant.py IN.gguf OUT.gguf --pre llama-bpe [--drop-key KEY ...]
Needs the `gguf` Python package (pip install gguf).
"""
import argparse
import sys

import gguf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--pre", required=True, help="new value of tokenizer.ggml.pre")
    ap.add_argument("--drop-key", action="append", default=[], help="metadata key to leave out")
    args = ap.parse_args(argv)

    reader = gguf.GGUFReader(args.input)
    arch_field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        print(f"{args.input}: no general.architecture", file=sys.stderr)
        return 1
    writer = gguf.GGUFWriter(args.output, arch=arch_field.contents(), endianess=reader.endianess)
    alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()

    replaced = False
    for field in reader.fields.values():
        # Virtual fields and the architecture key (GGUFWriter writes that one itself).
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in args.drop_key:
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.Tokenizer.PRE:
            value = args.pre
            replaced = True
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)
    if not replaced:
        writer.add_key_value(gguf.Keys.Tokenizer.PRE, args.pre, gguf.GGUFValueType.STRING)

    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
