"""A bounded load run of ``POST /recommend`` on loopback: requests/s, latency percentiles, errors.

    python benchmarks/service_load.py --duration-s 30 --concurrency 8

Starts ``anyshape serve --read-only --workers 0`` on 127.0.0.1 (a free port, a temporary runs
database) over the studies in ``--studies`` (default: studies/), or uses a running one given by
``--url`` (127.0.0.1 or localhost only). Every answer is checked against the best Pareto config
computed here from ``GET /studies/{name}`` (most accurate within the budget): a wrong answer
counts as an error like a non-200. Bounded by ``--duration-s`` and ``--max-requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

LOOPBACK = ("127.0.0.1", "localhost")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(studies: Path, db_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    cmd = [sys.executable, "-m", "nas.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--read-only",
           "--workers", "0", "--studies", str(studies), "--db", f"sqlite:///{db_dir / 'service.db'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"anyshape serve did not start (exit {proc.poll()})")


def pick_study(url: str, name: str | None) -> dict[str, Any]:
    studies = [s for s in httpx.get(f"{url}/studies", timeout=60).json() if s["pareto_size"] and (name is None or s["name"] == name)]
    if not studies:
        raise SystemExit("no study with a Pareto front to recommend from; run anyshape search first (or pass --study)")
    return dict(httpx.get(f"{url}/studies/{studies[0]['name']}", timeout=60).json())


def expected_trial(front: list[dict[str, Any]], budget: float, maximize: bool, study: str) -> int | None:
    """What the service should answer when this study is the only match (checked by the caller)."""
    fits = [p for p in front if p["latency_ms"] <= budget]
    if not fits:
        return None
    sign = 1 if maximize else -1
    return int(max(fits, key=lambda p: (sign * p["accuracy"], -p["latency_ms"], -p["trial"]))["trial"])


async def load(url: str, study: dict[str, Any], *, duration_s: float, concurrency: int, max_requests: int, seed: int) -> dict[str, Any]:
    front = study["pareto"]
    lo, hi = min(p["latency_ms"] for p in front), max(p["latency_ms"] for p in front)
    maximize = study["accuracy_direction"] != "minimize"
    rng = random.Random(seed)
    budgets = [round(rng.uniform(lo * 0.8, hi * 1.1), 3) for _ in range(64)]
    expected = {b: expected_trial(front, b, maximize, study["name"]) for b in budgets}
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    deadline = time.monotonic() + duration_s

    async def client_loop(client: httpx.AsyncClient, k: int) -> None:
        nonlocal issued
        i = k
        while time.monotonic() < deadline and issued < max_requests:  # bounded by time and count
            issued += 1
            budget = budgets[i % len(budgets)]
            i += concurrency
            body = {"device": study["device"], "runtime": study["runtime"], "workload": study["workload"],
                    "latency_budget_ms": budget, "study": study["name"]}
            start = time.perf_counter()
            try:
                r = await client.post(f"{url}/recommend", json=body)
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            got = r.json()
            if (got["trial"] if got["found"] else None) != expected[budget]:
                errors.append(f"budget {budget}: got trial {got.get('trial')}, expected {expected[budget]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await client.post(f"{url}/recommend", json={"device": study["device"], "runtime": study["runtime"],
                                                     "workload": study["workload"], "latency_budget_ms": hi, "study": study["name"]})  # warm the index
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client, k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = sorted(1000 * x for x in latencies)

    def pct(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2) if ms else float("nan")

    return {
        "study": study["name"], "pareto_size": len(front), "concurrency": concurrency, "seconds": round(elapsed, 2),
        "requests": issued, "ok": len(latencies) - sum(e.startswith(("HTTP", "budget")) for e in errors),
        "errors": len(errors), "error_examples": errors[:5], "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms_p50": pct(0.50), "latency_ms_p90": pct(0.90), "latency_ms_p99": pct(0.99),
        "latency_ms_max": round(ms[-1], 2) if ms else None, "latency_ms_mean": round(statistics.fmean(ms), 2) if ms else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A running service on 127.0.0.1 (default: start one)")
    parser.add_argument("--studies", type=Path, default=Path("studies"))
    parser.add_argument("--study", help="Study to recommend from (default: the first with a Pareto front)")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.duration_s <= 600 or not 1 <= args.concurrency <= 256 or not 1 <= args.max_requests <= 10_000_000:
        raise SystemExit("--duration-s 1..600, --concurrency 1..256, --max-requests 1..10000000")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit("load runs go only to 127.0.0.1 / localhost")
    with tempfile.TemporaryDirectory(prefix="anyshape-load-") as tmp:
        url, proc = (args.url, None) if args.url else start_server(args.studies.absolute(), Path(tmp))
        try:
            study = pick_study(url, args.study)
            result = asyncio.run(load(url, study, duration_s=args.duration_s, concurrency=args.concurrency,
                                      max_requests=args.max_requests, seed=args.seed))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result, indent=2))
    print(f"| {result['study']} ({result['pareto_size']} configs) | {result['concurrency']} | {result['seconds']} | {result['requests']} "
          f"| {result['requests_per_s']} | {result['latency_ms_p50']} | {result['latency_ms_p99']} | {result['errors']} |")


if __name__ == "__main__":
    main()
