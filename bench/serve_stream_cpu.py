"""Streaming vs non-streaming chat at concurrency 32 over HTTP, per `deployment.stream_interval_s` (phi4-tiny, CPU).

Every stream chunk is a Ray streaming item through the replica, the ingress and the proxy (the split layout; in the
single layout the replica is the ingress). On 2 cores those hops cost more CPU than the toy model's tokens, so how
often a stream's tokens travel, and through how many processes, decides its rate. For each layout and interval
the app is redeployed and the same load runs streaming and non-streaming, alternating. Writes
bench/results/serve_stream_cpu.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch
from ray import serve

sys.path.insert(0, str(Path(__file__).resolve().parent))  # serve_cpu.py beside this file
from bench_tables import md_table
from serve_cpu import end_session, load, percentile, serve_session

from phifleet.serve.app import build_app
from phifleet.serve.config import SERVE_RAY_ENV

RESULTS = Path(__file__).resolve().parent / "results" / "serve_stream_cpu.md"


def deploy(interval: float, layout: str) -> None:
    deployment = {"max_ongoing_requests": 64, "max_queued_requests": -1, "stream_interval_s": interval}
    app = build_app({"engine": {"served_model_name": "phi4-tiny"}, "deployment": {**deployment, "layout": layout}})
    serve.run(app, name="bench", route_prefix="/")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--intervals", type=float, nargs="+", default=[0.0, 0.25])
    ap.add_argument("--layouts", nargs="+", choices=["split", "single"], default=["split", "single"])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    url = serve_session(SERVE_RAY_ENV)
    rows = []
    for layout, interval in [(lay, i) for lay in args.layouts for i in args.intervals]:
        deploy(interval, layout)
        asyncio.run(load(url, 32, 32, True, 8))  # warm-up
        rates: dict[bool, list[float]] = {False: [], True: []}
        lats: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for stream in (False, True):
                rps, lat = asyncio.run(load(url, 32, args.requests, stream, args.max_tokens))
                rates[stream].append(rps)
                lats[stream] += lat
        chat, streamed = sum(rates[False]) / args.rounds, sum(rates[True]) / args.rounds
        rows.append(
            [
                layout,
                f"{interval:g}",
                f"{chat:.1f}",
                f"{streamed:.1f}",
                f"{streamed / chat:.2f}x",
                f"{percentile(lats[False], 0.5) * 1e3:.0f}",
                f"{percentile(lats[True], 0.5) * 1e3:.0f}",
            ]
        )
        print(rows[-1], flush=True)
    end_session()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread per process, no GPU"
    header = ["layout", "stream_interval_s", "chat req/s", "stream req/s", "stream / chat"]
    header += ["chat p50 ms", "stream p50 ms"]
    report = f"""# Streaming vs non-streaming at concurrency 32 (phi4-tiny, CPU)

Machine: {machine}. Produced by `bench/serve_stream_cpu.py`: {args.requests} chat completions of exactly
{args.max_tokens} greedy tokens per measurement at concurrency 32 over HTTP on loopback (client, Serve proxy, ingress
and replica share the cores), streaming and non-streaming alternating, {args.rounds} rounds each, the app redeployed
per `deployment.layout` (split: ingress deployment + engine replica; single: the replica serves HTTP itself) and
`deployment.stream_interval_s` (the first token of a stream always goes at once). Latency is to the last byte.

{md_table(header, rows)}
"""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
