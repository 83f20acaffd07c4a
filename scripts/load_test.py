"""Load test of `bertfit serve` on loopback: latency (p50, p99) and throughput for 1 and 16
concurrent clients, each sending one text per request, bounded in requests and in time.

    .venv/bin/python scripts/load_test.py [--model-dir models/finetune] [--requests 200]
        [--clients 1 16] [--max-seconds 120]

It starts the server itself on a free loopback port (the same `bertfit serve` a user runs),
waits for /health, sends mr's test texts (data/tasks/mr/test.parquet, else --texts FILE's
`text` column) round-robin, then stops the server. Every request must answer 200.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

BERTFIT = Path(sys.executable).parent / "bertfit"


def post(url: str, text: str) -> float:
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status}")
    return time.perf_counter() - started


def run_clients(url: str, texts: list[str], clients: int, requests: int, limit: float) -> dict:
    deadline = time.monotonic() + limit
    latencies: list[float] = []

    def client(k: int) -> None:
        for i in range(k, requests, clients):
            if time.monotonic() > deadline:
                return
            latencies.append(post(url, texts[i % len(texts)]))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": len(latencies) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/finetune"))
    parser.add_argument("--texts", type=Path, default=Path("data/tasks/mr/test.parquet"))
    parser.add_argument("--requests", type=int, default=200, help="per client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per client count")
    args = parser.parse_args()
    texts = pd.read_parquet(args.texts)["text"].tolist()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(BERTFIT), "serve", str(args.model_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        post(f"{url}/predict", texts[0])  # the first request pays for lazy set-up
        results = [
            run_clients(f"{url}/predict", texts, c, args.requests, args.max_seconds)
            for c in args.clients
        ]
        with urllib.request.urlopen(f"{url}/health") as response:
            batches = json.loads(response.read())["batches_scored"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("| clients | requests | p50 latency | p99 latency | requests/s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['clients']} | {r['requests']} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms "
            f"| {r['requests_per_s']:.1f} |"
        )
    total = sum(r["requests"] for r in results) + 1
    print(f"\n{total} requests scored in {batches} batches")


if __name__ == "__main__":
    main()
