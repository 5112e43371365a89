#!/usr/bin/env python3
"""Aggregate throughput of `tappa serve` under C concurrent clients (standard library only).

Each client sends /v1/completions requests back to back (a short prompt, `max_tokens` tokens with
ignore_eos, so every request generates the same amount) for `--seconds`; reported: requests, generated
tokens per second over all clients, and p50 / p99 request latency.

    build/tappa serve --port 8080 &
    bench/serve_load.py --url http://127.0.0.1:8080 --clients 1 4 16 --seconds 30
"""
import argparse
import json
import threading
import time
import urllib.request


def one(url: str, body: bytes) -> tuple[int, float]:
    t0 = time.perf_counter()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        j = json.loads(r.read())
    return j["usage"]["completion_tokens"], time.perf_counter() - t0


def run(url: str, clients: int, seconds: float, body: bytes) -> dict:
    stop = time.perf_counter() + seconds
    lat, toks, errors = [], [0], [0]
    lock = threading.Lock()

    def worker():
        while time.perf_counter() < stop:
            try:
                n, dt = one(url, body)
            except Exception:  # noqa: BLE001 — counted, the run goes on
                with lock:
                    errors[0] += 1
                continue
            with lock:
                lat.append(dt)
                toks[0] += n

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    return {"clients": clients, "requests": len(lat), "errors": errors[0], "wall_s": round(wall, 1),
            "tokens_per_s": round(toks[0] / wall, 1), "p50_s": round(q(0.5), 2), "p99_s": round(q(0.99), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--prompt", default="Write a short story about a robot who learns to paint.")
    ap.add_argument("--kv-method", default=None)
    ap.add_argument("--kv-budget", type=int, default=None)
    a = ap.parse_args()
    body = {"prompt": a.prompt, "max_tokens": a.max_tokens, "temperature": 0, "ignore_eos": True}
    if a.kv_method:
        body["kv_method"] = a.kv_method
    if a.kv_budget:
        body["kv_budget"] = a.kv_budget
    for c in a.clients:
        print(json.dumps(run(a.url, c, a.seconds, json.dumps(body).encode())), flush=True)


if __name__ == "__main__":
    main()
