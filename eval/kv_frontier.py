#!/usr/bin/env python3
"""Bytes held against fidelity for KV storage formats stacked with eviction (issue #21).

Reads the results.json of `tappa eval-kv` runs over fidelity tasks with a --cache-types axis (one run
per model), groups the cells by (method, cache type, budget), and writes

  OUT/frontier.md    per model: each pairing's KV bytes held after the prompt (mean over samples),
                     KL(full f32 ‖ pairing) mean ± standard error, top-1 agreement, the perplexity of
                     the teacher-forced continuation, and which pairing holds the fewest bytes with
                     KL ≤ the threshold (by the mean, and by the upper end of its 95 % interval);
  OUT/frontier.png   bytes held vs KL, one panel per model, colour = method, marker = cache type.

The reference of every KL is the f32 full cache of the same sample (eval-kv's fidelity reference), so
fullkv@f32 is 0 by construction and is left out of the plot's log axis.

  .cache/venv/bin/python eval/kv_frontier.py --run SmolLM2-135M=runs/a/results.json \
      --run Qwen2.5-0.5B=runs/b/results.json -o docs/img/kv_frontier
"""
import argparse
import json
import math
import os
import sys
from collections import defaultdict


def load_groups(path):
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    groups = defaultdict(list)
    for c in results.get("cells", []):
        if "kl" not in c:
            continue  # not a fidelity cell
        method = c.get("base_method", c["method"])
        cache = c.get("cache", "f32")
        budget = 0 if method == "fullkv" else int(c["budget"])
        groups[(method, cache, budget)].append(c)
    return groups


def summarize(cells):
    n = len(cells)
    kl = [c["kl"] for c in cells]
    mean = sum(kl) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in kl) / (n - 1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n) if n > 1 else float("nan")
    nll = sum(c["nll"] for c in cells) / n
    return {
        "n": n,
        "kl": mean,
        "kl_se": se,
        "kl_hi": mean + 1.96 * se if n > 1 else float("nan"),
        "top1": sum(c["top1"] for c in cells) / n,
        "ppl": math.exp(nll),
        "ppl_full": math.exp(sum(c["nll_full"] for c in cells) / n),
        "bytes": sum(c["kv_bytes"] for c in cells) / n,
        "bytes_per_token": sum(c["kv_bytes"] / c["n_prompt"] for c in cells) / n,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="LABEL=results.json",
                    help="a model's eval-kv results (repeatable)")
    ap.add_argument("--threshold", type=float, default=0.05, help="KL threshold (nats), default 0.05")
    ap.add_argument("-o", "--out", required=True, help="output folder")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    runs = []
    for spec in args.run:
        if "=" not in spec:
            sys.exit(f"kv_frontier.py: error: --run wants LABEL=results.json, got {spec!r}")
        label, path = spec.split("=", 1)
        groups = load_groups(path)
        if not groups:
            sys.exit(f"kv_frontier.py: error: {path} has no fidelity cells")
        runs.append((label, path, {k: summarize(v) for k, v in groups.items()}))

    lines = ["# KV storage formats × eviction: bytes held vs KL to the f32 full cache", "",
             "Written by `eval/kv_frontier.py` from `tappa eval-kv` fidelity cells. KL: mean over the",
             "samples' teacher-forced tokens, ± standard error over samples; ppl: exp of the mean",
             "continuation NLL; bytes: KV cache bytes held after the prompt (all layers and heads).", ""]
    for label, path, s in runs:
        lines += [f"## {label}", "", f"Source: `{path}`.", "",
                  "| method | cache | budget | samples | KV bytes held | bytes / prompt token | KL (nats) | top-1 | ppl (full f32: ppl_full) |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for (m, c, b), r in sorted(s.items(), key=lambda kv: kv[1]["bytes"]):
            se = f" ± {r['kl_se']:.4f}" if r["n"] > 1 else " (1 sample: no interval)"
            lines.append(f"| {m} | {c} | {b or 'full'} | {r['n']} | {r['bytes'] / 2**20:.2f} MiB | {r['bytes_per_token']:.0f} | "
                         f"{r['kl']:.4f}{se} | {100 * r['top1']:.1f} % | {r['ppl']:.3f} ({r['ppl_full']:.3f}) |")
        ok_mean = [(r["bytes"], k) for k, r in s.items() if r["kl"] <= args.threshold]
        ok_hi = [(r["bytes"], k) for k, r in s.items() if r["kl_hi"] <= args.threshold]
        lines.append("")
        for what, ok in (("mean KL", ok_mean), ("upper end of the 95 % interval of KL", ok_hi)):
            if ok:
                b, (m, c, bud) = min(ok)
                lines.append(f"- Fewest bytes with {what} ≤ {args.threshold}: **{m}@{c}"
                             f"{'' if not bud else f' budget {bud}'}**, {b / 2**20:.2f} MiB "
                             f"(KL {s[(m, c, bud)]['kl']:.4f}, {s[(m, c, bud)]['n']} samples).")
            else:
                lines.append(f"- No pairing has {what} ≤ {args.threshold}.")
        lines.append("")
    with open(os.path.join(args.out, "frontier.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"fullkv": "#444444", "snapkv": "#1f77b4", "tappa": "#d62728"}
    markers = {"f32": "o", "f16": "s", "bf16": "P", "q8_0": "^", "q4_0": "v", "q4_0:rot=on": "D", "q8_0:rot=on": "X"}
    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 4.6), squeeze=False)
    for ax, (label, _, s) in zip(axes[0], runs):
        for (m, c, b), r in s.items():
            if r["kl"] <= 0:
                continue  # the reference itself
            ax.errorbar(r["bytes"] / 2**20, r["kl"], yerr=r["kl_se"] if r["n"] > 1 else None,
                        fmt=markers.get(c, "x"), color=colours.get(m, "#2ca02c"), ms=6, capsize=2)
            ax.annotate(f"{b}" if b else "", (r["bytes"] / 2**20, r["kl"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.axhline(args.threshold, color="#999999", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("KV bytes held after the prompt (MiB, log)")
        ax.set_ylabel("KL to the f32 full cache (nats, log)")
        ax.set_title(label)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    handles = [plt.Line2D([], [], color=col, marker="o", ls="", label=m) for m, col in colours.items()]
    handles += [plt.Line2D([], [], color="#777777", marker=mk, ls="", label=c) for c, mk in markers.items()
                if any(k[1] == c for _, _, s in runs for k in s)]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "frontier.png"), dpi=130)
    print(f"kv_frontier.py: wrote {args.out}/frontier.md and frontier.png")


if __name__ == "__main__":
    main()
