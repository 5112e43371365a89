#!/usr/bin/env python3
"""Mixed load against `tappa serve` (issue #18's load acceptance; standard library only).

Starts the server (or uses --url), then C closed-loop clients send /v1/completions for --seconds: prompts
of mixed length (token windows of real text, the Paul Graham essays of the data folder, up to 4096
tokens), max_tokens 16–64 with ignore_eos, every other request with kv_method (default "tappa",
kv_budget 256), a quarter of them streamed. Every status is recorded: a request must be answered (200,
the tokens it asked for) or refused with 503 + Retry-After and a JSON error message; anything else —
another status, a broken connection, a server that died — fails the run (exit 1). A monitor samples the
server's RSS (/proc) and /metrics every half second: the KV bytes held must stay under the cap.

Then the admission arithmetic for 4K-token requests: a probe server with a 1 MiB cap refuses a
4096-token prompt (400) and names the KV memory it would reserve, fullkv and compressed; the
cap over that estimate is how many such requests run at once.

    bench/serve_mixed_load.py --tappa build/tappa --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --clients 64 --seconds 60 -o build/serve_mixed_load.json

Prints one JSON object (also to -o): per class (fullkv / compressed) requests, statuses, tokens/s and
p50 / p99 latency of the answered ones; server peaks; the 4K admission counts.
"""
import argparse
import glob
import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.parse


def start_server(tappa, model, args):
    cmd = [tappa, "serve", "-m", model, "--port", "0"] + args
    srv = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    line = srv.stderr.readline()
    m = re.search(r"listening on (http://[\d.]+:\d+)", line)
    if not m:
        srv.kill()
        raise SystemExit(f"no 'listening on' line from {' '.join(cmd)}: {line!r}")
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    return srv, m.group(1)


def request(url, method, path, body=None, timeout=600, stream=False):
    """(status, headers, body bytes). For stream=True the SSE body is read to its end."""
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def metrics(url):
    _, _, b = request(url, "GET", "/metrics", timeout=30)
    out = {}
    for line in b.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def quantile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tappa", default="build/tappa")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--url", help="use this running server instead of starting one (no RSS then)")
    ap.add_argument("--data", default=os.environ.get("TAPPA_DATA_DIR", "../shared/data"))
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--threads", type=int, default=2, help="server -t")
    ap.add_argument("--ctx", type=int, default=4224, help="server -c (a 4096-token prompt + 64 tokens fit)")
    ap.add_argument("--kv-cap-mib", type=float, default=1024)
    ap.add_argument("--queue-timeout", type=float, default=30)
    ap.add_argument("--kv-method", default="tappa")
    ap.add_argument("--kv-budget", type=int, default=256)
    ap.add_argument("--compressed-share", type=float, default=0.5, help="fraction of requests with --kv-method")
    ap.add_argument("--lengths", default="64:8,256:6,1024:3,2048:2,4096:1",
                    help="prompt tokens:weight, comma-separated")
    ap.add_argument("--rss-slack-mib", type=float, default=512,
                    help="RSS may exceed the KV cap by the model file plus this (weights, buffers, threads)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output")
    a = ap.parse_args()

    lengths = [(int(x.split(":")[0]), float(x.split(":")[1])) for x in a.lengths.split(",")]
    srv = None
    srv_args = ["-t", str(a.threads), "-c", str(a.ctx), "--kv-cap-mib", str(a.kv_cap_mib),
                "--queue-timeout", str(a.queue_timeout), "--max-running", "64", "--max-queue", "256"]
    if a.url:
        url = a.url
    else:
        srv, url = start_server(a.tappa, a.model, srv_args)
    failures = []
    try:
        # Token ids of real text, sliced into prompts (so a prompt's length is exact).
        text = "\n\n".join(open(p, encoding="utf-8").read() for p in sorted(glob.glob(f"{a.data}/niah_paulgraham_essays/*.txt")))
        if not text:
            raise SystemExit(f"no essays under {a.data}/niah_paulgraham_essays (set --data or TAPPA_DATA_DIR)")
        st, _, b = request(url, "POST", "/tokenize", {"content": text[:400000]})
        assert st == 200, (st, b[:200])
        ids = json.loads(b)["tokens"]
        assert len(ids) > max(n for n, _ in lengths) + 1, len(ids)

        lock = threading.Lock()
        records = []  # (class, status, latency_s, prompt_tokens, completion_tokens, streamed, t_end)
        stop_at = time.monotonic() + a.seconds
        peaks = {"rss_mib": 0.0, "kv_bytes_held": 0.0, "kv_bytes_reserved": 0.0, "running": 0.0, "queued": 0.0}
        monitor_stop = threading.Event()

        def monitor():
            while not monitor_stop.is_set():
                try:
                    m = metrics(url)
                    with lock:
                        for k, name in (("kv_bytes_held", "tappa_kv_bytes_held"), ("kv_bytes_reserved", "tappa_kv_bytes_reserved"),
                                        ("running", "tappa_running"), ("queued", "tappa_queue_depth")):
                            if name in m:
                                peaks[k] = max(peaks[k], m[name])
                except Exception as e:  # noqa: BLE001
                    with lock:
                        failures.append(f"/metrics failed: {e!r}")
                if srv is not None:
                    r = rss_mib(srv.pid)
                    if r is not None:
                        with lock:
                            peaks["rss_mib"] = max(peaks["rss_mib"], r)
                monitor_stop.wait(0.5)

        def client(k):
            rng = random.Random(a.seed * 1000 + k)
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                n = rng.choices([x for x, _ in lengths], weights=[w for _, w in lengths])[0]
                off = rng.randrange(0, len(ids) - n)
                compressed = rng.random() < a.compressed_share
                stream = rng.random() < 0.25
                max_tokens = rng.choice([16, 32, 64])
                body = {"prompt": ids[off:off + n], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                        "stream": stream}
                if stream:
                    body["stream_options"] = {"include_usage": True}
                if compressed:
                    body["kv_method"] = a.kv_method
                    body["kv_budget"] = a.kv_budget
                cls = "compressed" if compressed else "fullkv"
                t0 = time.monotonic()
                try:
                    st, hd, raw = request(url, "POST", "/v1/completions", body, timeout=a.seconds + 600)
                except Exception as e:  # noqa: BLE001 — a broken connection is a failure of the run
                    with lock:
                        failures.append(f"client {k} request {i}: {e!r}")
                        records.append((cls, "error", time.monotonic() - t0, n, 0, stream, time.monotonic()))
                    continue
                dt = time.monotonic() - t0
                got = 0
                problem = None
                if st == 200:
                    try:
                        if stream:
                            events = [l[6:] for l in raw.decode().splitlines() if l.startswith("data: ")]
                            if not events or events[-1] != "[DONE]":
                                problem = "stream without [DONE]"
                            usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
                            got = usage[-1]["completion_tokens"] if usage else 0
                        else:
                            got = json.loads(raw)["usage"]["completion_tokens"]
                        if got != max_tokens:
                            problem = f"200 with {got} of {max_tokens} tokens"
                    except Exception as e:  # noqa: BLE001
                        problem = f"200 with an unreadable body: {e!r}"
                elif st == 503:
                    try:
                        msg = json.loads(raw)["error"]["message"]
                    except Exception:  # noqa: BLE001
                        msg = ""
                    if "retry-after" not in hd or not msg:
                        problem = f"503 without Retry-After or message: {hd} {raw[:200]!r}"
                else:
                    problem = f"status {st}: {raw[:300]!r}"
                with lock:
                    records.append((cls, st, dt, n, got, stream, time.monotonic()))
                    if problem:
                        failures.append(f"client {k} request {i} ({cls}, {n} tokens): {problem}")
                if st == 503:  # honour Retry-After (bounded by the end of the run)
                    time.sleep(min(float(hd.get("retry-after", "1")), max(0.0, stop_at - time.monotonic())))

        load_before = os.getloadavg()
        mon = threading.Thread(target=monitor, daemon=True)
        mon.start()
        t_start = time.monotonic()
        ts = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.monotonic() - t_start
        monitor_stop.set()
        mon.join()

        st, _, _ = request(url, "GET", "/health", timeout=30)
        if st != 200:
            failures.append(f"/health after the run: {st}")
        final = metrics(url)
        if srv is not None and srv.poll() is not None:
            failures.append(f"the server exited with {srv.returncode}")
        cap = a.kv_cap_mib * 1048576
        if peaks["kv_bytes_held"] > cap:
            failures.append(f"KV bytes held {peaks['kv_bytes_held']:.0f} over the cap {cap:.0f}")
        model_mib = os.path.getsize(a.model) / 1048576 if os.path.exists(a.model) else 0
        rss_bound = a.kv_cap_mib + model_mib + a.rss_slack_mib
        if srv is not None and peaks["rss_mib"] > rss_bound:
            failures.append(f"server RSS {peaks['rss_mib']:.0f} MiB over cap + model + slack = {rss_bound:.0f} MiB")

        def summary(cls):
            rs = [r for r in records if r[0] == cls]
            ok = [r for r in rs if r[1] == 200]
            statuses = {}
            for r in rs:
                statuses[str(r[1])] = statuses.get(str(r[1]), 0) + 1
            lat = [r[2] for r in ok]
            return {"requests": len(rs), "statuses": statuses, "answered": len(ok),
                    "answered_per_s": round(len(ok) / wall, 3),
                    "generated_tokens_per_s": round(sum(r[4] for r in ok) / wall, 1),
                    "prompt_tokens_per_s": round(sum(r[3] for r in ok) / wall, 1),
                    "p50_s": round(quantile(lat, 0.5), 2) if lat else None,
                    "p99_s": round(quantile(lat, 0.99), 2) if lat else None,
                    "answered_by_prompt_tokens": {str(n): sum(1 for r in ok if r[3] == n) for n, _ in lengths}}

        out = {"clients": a.clients, "seconds": a.seconds, "wall_s": round(wall, 1), "server_args": srv_args,
               "kv_method": f"{a.kv_method} budget {a.kv_budget}", "lengths": a.lengths,
               "fullkv": summary("fullkv"), "compressed": summary("compressed"),
               "peak": {"rss_mib": round(peaks["rss_mib"], 1), "kv_mib_held": round(peaks["kv_bytes_held"] / 1048576, 1),
                        "kv_mib_reserved": round(peaks["kv_bytes_reserved"] / 1048576, 1),
                        "running": peaks["running"], "queued": peaks["queued"]},
               "rss_bound_mib": round(rss_bound, 1), "kv_cap_mib": a.kv_cap_mib,
               "metrics_after": {k: v for k, v in final.items() if k.startswith("tappa_") and ("total" in k or "max" in k)},
               "nproc": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    finally:
        if srv is not None:
            srv.terminate()
            try:
                srv.wait(timeout=60)
            except subprocess.TimeoutExpired:
                srv.kill()
                failures.append("the server did not stop within 60 s of SIGTERM")

    # Admission arithmetic for 4096-token prompts (max_tokens 64): the estimate the server reserves.
    if not a.url:
        probe, purl = start_server(a.tappa, a.model, ["-t", "1", "-c", str(a.ctx), "--kv-cap-mib", "1"])
        try:
            est = {}
            for cls, extra in (("fullkv", {}), ("compressed", {"kv_method": a.kv_method, "kv_budget": a.kv_budget})):
                st, _, b = request(purl, "POST", "/v1/completions", {"prompt": ids[:4096], "max_tokens": 64, **extra})
                m = re.search(r"needs up to ([\d.]+) MiB", b.decode())
                if st != 400 or not m:
                    failures.append(f"probe {cls}: expected 400 naming the KV estimate, got {st} {b[:200]!r}")
                    continue
                est[cls] = {"reserve_mib": float(m.group(1)), "admitted_at_once": int(a.kv_cap_mib // float(m.group(1)))}
            out["admission_4k"] = {"cap_mib": a.kv_cap_mib, **est}
        finally:
            probe.terminate()
            probe.wait(timeout=60)

    out["failures"] = failures[:50]
    out["n_failures"] = len(failures)
    out["ok"] = not failures
    s = json.dumps(out, indent=1)
    print(s)
    if a.output:
        with open(a.output, "w") as f:
            f.write(s + "\n")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
