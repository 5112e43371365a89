#!/usr/bin/env python3
"""Compares lm-evaluation-harness's per-item log-likelihoods (its --log_samples files, from a run against
`tappa serve`) with `tappa eval-mc -o` on the same items. Exits 1 when a choice's log-likelihood differs by
more than --tol, when an item or a choice is missing on either side, or when an accuracy differs.

    eval/compare_lm_eval.py --lm-eval-dir build/lm_eval/out --eval-mc build/lm_eval/eval_mc.json \
        --task tappa_piqa=piqa --task tappa_arc_easy=arc_easy

Each --task maps an lm-eval task name (the samples_<name>_*.jsonl file) to an eval-mc task name.
Prints one JSON line per task and a last line {"ok": …}.
"""
import argparse
import glob
import json
import os
import sys


def read_samples(out_dir: str, task: str) -> dict[int, dict]:
    files = sorted(glob.glob(os.path.join(out_dir, "**", f"samples_{task}_*.jsonl"), recursive=True))
    if not files:
        raise SystemExit(f"no samples_{task}_*.jsonl under {out_dir} (was lm_eval run with --log_samples?)")
    docs = {}
    with open(files[-1], encoding="utf-8") as f:  # the newest run (timestamped names sort in time order)
        for line in f:
            s = json.loads(line)
            docs[int(s["doc_id"])] = s
    return docs


def loglik_of(resp) -> float:
    # filtered_resps holds one [loglik, is_greedy] per choice (numbers, or strings in some versions).
    return float(resp[0] if isinstance(resp, (list, tuple)) else resp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm-eval-dir", required=True, help="lm_eval's --output_path")
    ap.add_argument("--eval-mc", required=True, help="the JSON that `tappa eval-mc -o` wrote")
    ap.add_argument("--task", action="append", required=True, help="LM_EVAL_TASK=EVAL_MC_TASK")
    ap.add_argument("--tol", type=float, default=1e-3)
    a = ap.parse_args()
    with open(a.eval_mc, encoding="utf-8") as f:
        mc = json.load(f)
    ok = True
    for spec in a.task:
        lt, _, mt = spec.partition("=")
        samples = read_samples(a.lm_eval_dir, lt)
        items = mc["tasks"][mt]["items"]
        problems = []
        if sorted(samples) != list(range(len(items))):
            problems.append(f"lm-eval has docs {min(samples)}..{max(samples)} ({len(samples)}), eval-mc {len(items)} items")
        max_d, worst, n_choices = 0.0, None, 0
        acc_l = acc_m = norm_l = 0
        for i, it in enumerate(items):
            s = samples.get(i)
            if s is None:
                continue
            ll_l = [loglik_of(r) for r in s["filtered_resps"]]
            ll_m = it["loglik"]
            if len(ll_l) != len(ll_m):
                problems.append(f"item {i}: {len(ll_l)} choices in lm-eval, {len(ll_m)} in eval-mc")
                continue
            if int(s["target"]) != int(it["gold"]):
                problems.append(f"item {i}: gold {s['target']} in lm-eval, {it['gold']} in eval-mc")
            for c, (x, y) in enumerate(zip(ll_l, ll_m)):
                n_choices += 1
                d = abs(x - y)
                if d > max_d:
                    max_d, worst = d, (i, c, x, y)
            acc_l += int(float(s["acc"]) == 1.0)
            norm_l += int(float(s.get("acc_norm", 0)) == 1.0)
            acc_m += int(max(range(len(ll_m)), key=lambda k: (ll_m[k], -k)) == int(it["gold"]))
        n = len(items)
        row = {"task": lt, "eval_mc_task": mt, "items": n, "choices": n_choices, "max_abs_dloglik": max_d,
               "worst": worst, "acc_lm_eval": acc_l / n if n else None, "acc_eval_mc": acc_m / n if n else None,
               "acc_eval_mc_reported": mc["tasks"][mt]["acc"],
               # acc_norm is shown, not checked: lm-eval divides by the choice's length in characters,
               # eval-mc by its length in bytes, so non-ASCII choices may tip differently.
               "acc_norm_lm_eval": norm_l / n if n else None, "acc_norm_eval_mc": mc["tasks"][mt]["acc_norm"]}
        if max_d > a.tol:
            problems.append(f"max |dloglik| {max_d:.3g} > {a.tol} (item, choice, lm-eval, eval-mc: {worst})")
        if acc_l != acc_m:
            problems.append(f"acc differs: lm-eval {acc_l}/{n}, eval-mc {acc_m}/{n}")
        row["problems"] = problems[:20]
        ok = ok and not problems
        print(json.dumps(row), flush=True)
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
