"""Serving on CPU with phi4-tiny: throughput and latency over HTTP vs direct engine calls, batching on and off.

Bounded load on loopback only: a fixed number of chat completions per concurrency level, sent by one
aiohttp client in this process to a local Ray Serve app. The same run measures
- direct engine calls (no HTTP, no Serve) with the same prompts: the serving overhead ratio;
- the same app with batching disabled (engine max_batch_size 1): the batching gain.
Writes bench/results/serve_cpu.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import aiohttp
import ray
import torch
from ray import serve

from engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from engine.chat_template import render_chat
from serve.app import build_app

RESULTS = Path(__file__).resolve().parent / "results" / "serve_cpu.md"
PRODUCTS = ["blender", "kettle", "lamp", "tent", "laptop", "chair", "phone", "desk"]
MAX_TOKENS = 16


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Write a positive review of a {PRODUCTS[i % len(PRODUCTS)]}."}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(url: str, concurrency: int, total: int, stream: bool) -> tuple[float, list[float]]:
    """(requests/s, latencies in s) for ``total`` requests with ``concurrency`` in flight."""
    latencies: list[float] = []
    queue = list(range(total))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            body = {
                "model": "phi4-tiny",
                "messages": messages(i),
                "temperature": 0,
                "max_tokens": MAX_TOKENS,
                "stream": stream,
            }
            start = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()  # the whole answer, or the whole stream through [DONE]
            latencies.append(time.perf_counter() - start)

    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return total / (time.perf_counter() - start), latencies


def direct(engine: Engine, concurrency: int, total: int) -> tuple[float, list[float]]:
    """The same requests straight into the engine, ``concurrency`` at a time as one batch."""
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)
    latencies: list[float] = []
    start = time.perf_counter()
    for first in range(0, total, concurrency):
        reqs = [GenerationRequest(render_chat(messages(i)), params) for i in range(first, first + concurrency)]
        t = time.perf_counter()
        engine.generate(reqs)
        latencies += [time.perf_counter() - t] * len(reqs)
    return total / (time.perf_counter() - start), latencies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests-per-level", type=int, default=96)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    levels = [1, 8, 32]
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    engine = Engine(EngineConfig())
    rows: list[list[str]] = []
    results: dict[tuple[str, int], tuple[float, list[float]]] = {}
    for batching in (True, False):
        engine_args = {} if batching else {"max_batch_size": 1}
        app = build_app(
            {
                "engine": engine_args,
                "model_name": "phi4-tiny",
                "max_ongoing_requests": 64,
                "max_queued_requests": -1,
                "batch_wait_timeout_s": 0.005,
            }
        )
        serve.run(app, name="bench", route_prefix="/")
        asyncio.run(load(url, 4, 8, False))  # warm-up
        for c in levels:
            n = max(c * 3, args.requests_per_level // (4 if c == 1 else 1))
            for stream in (False, True) if batching else (False,):
                results[("stream" if stream else "http", c) if batching else ("nobatch", c)] = asyncio.run(
                    load(url, c, n, stream)
                )
        serve.delete("bench")
    for c in levels:
        n = max(c * 3, args.requests_per_level // (4 if c == 1 else 1))
        direct(engine, c, c)  # warm-up
        results[("direct", c)] = direct(engine, c, n)

    for c in levels:
        d_rps, d_lat = results[("direct", c)]
        nb_rps, _ = results[("nobatch", c)]
        for mode, label in (("http", "chat"), ("stream", "chat, stream")):
            rps, lat = results[(mode, c)]
            p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
            rows.append(
                [
                    str(c),
                    label,
                    f"{rps:.1f}",
                    f"{p50 * 1e3:.0f}",
                    f"{p99 * 1e3:.0f}",
                    f"{rps / d_rps:.2f}x",
                    f"{(p50 - percentile(d_lat, 0.5)) * 1e3:+.0f}",
                    f"{rps / nb_rps:.2f}x" if mode == "http" else "",
                ]
            )
        rows.append(
            [
                str(c),
                "direct engine",
                f"{d_rps:.1f}",
                f"{percentile(d_lat, 0.5) * 1e3:.0f}",
                f"{percentile(d_lat, 0.99) * 1e3:.0f}",
                "1.00x",
                "",
                "",
            ]
        )
        nb_lat = results[("nobatch", c)][1]
        rows.append(
            [
                str(c),
                "chat, batching off",
                f"{nb_rps:.1f}",
                f"{percentile(nb_lat, 0.5) * 1e3:.0f}",
                f"{percentile(nb_lat, 0.99) * 1e3:.0f}",
                f"{nb_rps / d_rps:.2f}x",
                "",
                "1.00x",
            ]
        )
    serve.shutdown()
    header = ["concurrency", "path", "req/s", "p50 ms", "p99 ms", "vs direct", "p50 over direct (ms)", "batching gain"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread per process, no GPU"
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    )
    report = f"""# Serving on CPU (phi4-tiny)

Machine: {machine}. Produced by `bench/serve_cpu.py`: chat completions of up to {MAX_TOKENS} greedy tokens
over HTTP on loopback (one aiohttp client, the Serve proxy, the ingress and one replica share the
machine), against the same requests sent straight into the engine as one batch per concurrency level,
and against the app with batching off (engine max_batch_size 1). Latency is to the last byte.

{table}
"""
    args.output.write_text(report)
    print(report)
    print(json.dumps({f"{k[0]}@{k[1]}": v[0] for k, v in results.items()}))


if __name__ == "__main__":
    main()
