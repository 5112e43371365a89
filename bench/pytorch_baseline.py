#!/usr/bin/env python3
"""The PyTorch + transformers side of the CUDA comparison (docs/PERFORMANCE.md, issue #17).

    python3 bench/pytorch_baseline.py [--shape llama-3.1-8b] [--quick]

Builds the model of the shape with random bf16 weights on the GPU (no file), attention through
SDPA, and measures, with CUDA events after a warm-up:
  prefill  tokens/s of one forward pass over N random tokens (logits of the last token only), N = 8192, 32768;
  decode   tokens/s of model.generate (greedy, default dynamic cache) at batch B from a C-token prompt:
           B * (T2 - T1) new tokens over time(T2) - time(T1), so the prompt's prefill cancels out.
Prints one JSON line per figure (and a table at the end).
"""
import argparse
import json
import time

import torch
import transformers

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192)),
}


def cuda_time(fn, reps):
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3.1-8b")
    ap.add_argument("--quick", action="store_true", help="one repetition each")
    args = ap.parse_args()
    reps = 1 if args.quick else 3
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**SHAPES[args.shape])
    cfg._attn_implementation = "sdpa"
    t0 = time.time()
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = transformers.LlamaForCausalLM(cfg)
    model.eval()
    print(json.dumps({"event": "model", "shape": args.shape, "params": sum(p.numel() for p in model.parameters()),
                      "seconds": round(time.time() - t0, 1), "torch": torch.__version__,
                      "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
    rows = []
    with torch.inference_mode():
        for n in (8192, 32768):
            ids = torch.randint(0, cfg.vocab_size, (1, n), device="cuda")
            fwd = lambda: model(input_ids=ids, logits_to_keep=1, use_cache=False)
            fwd()
            t = cuda_time(fwd, reps)
            rows.append({"test": f"prefill {n}", "tokens_per_s": n / t, "seconds": t})
            print(json.dumps(rows[-1]), flush=True)
            del ids
            torch.cuda.empty_cache()
        for batch, ctx, t1, t2 in ((1, 4096, 1, 65), (16, 4096, 1, 33), (8, 32768, 1, 17)):
            ids = torch.randint(0, cfg.vocab_size, (batch, ctx), device="cuda")
            mask = torch.ones_like(ids)

            def gen(n):
                return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, pad_token_id=0)
            gen(2)
            a = cuda_time(lambda: gen(t1), reps)
            b = cuda_time(lambda: gen(t2), reps)
            rows.append({"test": f"decode batch {batch} @ {ctx}", "tokens_per_s": batch * (t2 - t1) / (b - a),
                         "seconds": b - a})
            print(json.dumps(rows[-1]), flush=True)
            del ids, mask
            torch.cuda.empty_cache()
    print("| PyTorch %s + transformers %s | tokens/s |" % (torch.__version__, transformers.__version__))
    print("| --- | ---: |")
    for r in rows:
        print("| %s | %.1f |" % (r["test"], r["tokens_per_s"]))


if __name__ == "__main__":
    main()
