"""The engine on CPU with phi4-tiny: the continuous loop against the static batcher it replaced, ratios in one run.

- closed batches of 1/8/32 requests, 32 tokens each (ignore_eos): generated tokens/s, identical greedy tokens;
- open arrivals (Poisson, 16-512 output tokens): throughput and time to first token, the loop (requests join at
  the next step) against static batches formed from whatever has arrived when the engine is idle;
- time to first token of short requests while one 2,000-token generation runs, over their idle time to first token;
- label scoring with a ~200-token shared instruction and ~50-token texts: prompts/s with prefix reuse against
  without (and scores equal), and against labelling by greedy generation of the label (3 labels);
- structured output: tokens/s constrained to a JSON schema against the same prompts unconstrained, same tokens.

Writes bench/results/engine_cpu.md. Run: `make bench` (or `python bench/engine_cpu.py --quick`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from bench_tables import md_table

from phifleet.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from phifleet.engine.chat_template import render_chat
from phifleet.engine.driver import EngineDriver
from phifleet.engine.prompts import classification_prompt, extraction_prompt
from phifleet.engine.structured_output import response_format_of
from phifleet.engine.tiny.build import review_schema
from phifleet.engine.tiny.corpus import LABELS, reviews

RESULTS = Path(__file__).parent / "results" / "engine_cpu.md"
PRODUCTS = ["blender", "kettle", "lamp", "tent", "laptop", "chair", "phone", "desk"]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time over ``repeats`` runs after one warm-up run."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def request(i: int, max_tokens: int) -> GenerationRequest:
    text = f"Write a {LABELS[i % 3]} review of a {PRODUCTS[i % 8]}."
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    return GenerationRequest(render_chat([{"role": "user", "content": text}]), params)


def closed_batches(static: Engine, cont: Engine, sizes: list[int], repeats: int) -> list[list[str]]:
    rows = []
    for n in sizes:
        reqs = [request(i, 32) for i in range(n)]
        t_static, out_s = timed(lambda r=reqs: static.generate(r), repeats)
        t_cont, out_c = timed(lambda r=reqs: cont.generate(r), repeats)
        same = [a.token_ids for a in out_s] == [b.token_ids for b in out_c]
        tokens = sum(o.completion_tokens for o in out_s)
        rows.append(
            [
                str(n),
                str(tokens),
                f"{tokens / t_static:.0f}",
                f"{tokens / t_cont:.0f}",
                f"{t_static / t_cont:.2f}x",
                "yes" if same else "NO",
            ]
        )
        print("closed", rows[-1], flush=True)
    return rows


def arrivals(n: int, rate: float, seed: int) -> list[tuple[float, GenerationRequest]]:
    """Poisson arrivals at ``rate``/s, outputs uniform in 16..512 tokens."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        out.append((t, request(i, rng.randint(16, 512))))
    return out


def open_continuous(engine: Engine, plan: list[tuple[float, GenerationRequest]]) -> tuple[float, list[float], int]:
    """(makespan, times to first token, tokens): requests submitted to the loop's thread at their arrival times."""
    driver = EngineDriver(engine, name="bench-loop")
    first: dict[int, float] = {}
    done = threading.Semaphore(0)
    tokens = [0] * len(plan)
    start = time.perf_counter()

    def listener(i: int):
        def hear(item) -> None:
            first.setdefault(i, time.perf_counter() - start - plan[i][0])
            if isinstance(item, BaseException) or item.finish_reason is not None:
                tokens[i] = 0 if isinstance(item, BaseException) else item.completion_tokens
                done.release()

        return hear

    for i, (at, req) in enumerate(plan):
        time.sleep(max(0.0, at - (time.perf_counter() - start)))
        driver.submit(engine.prepare(req), listener(i), "stream")
    for _ in plan:
        done.acquire()
    makespan = time.perf_counter() - start
    driver.close()
    return makespan, [first[i] for i in range(len(plan))], sum(tokens)


def open_static(engine: Engine, plan: list[tuple[float, GenerationRequest]]) -> tuple[float, list[float], int]:
    """The static batcher as a server ran it: when idle, everything that has arrived becomes the next batch."""
    first: dict[int, float] = {}
    tokens = 0
    start = time.perf_counter()
    nxt = 0
    while nxt < len(plan):
        now = time.perf_counter() - start
        if plan[nxt][0] > now:
            time.sleep(plan[nxt][0] - now)
            now = plan[nxt][0]
        batch = []
        while nxt < len(plan) and plan[nxt][0] <= now:
            batch.append(nxt)
            nxt += 1
        for j, item in engine.stream_batch([plan[i][1] for i in batch]):
            i = batch[j]
            first.setdefault(i, time.perf_counter() - start - plan[i][0])
            if not isinstance(item, BaseException) and item.finish_reason is not None:
                tokens += item.completion_tokens
    return time.perf_counter() - start, [first[i] for i in range(len(plan))], tokens


def open_rows(static: Engine, cont: Engine, n: int, rate: float) -> list[list[str]]:
    plan = arrivals(n, rate, seed=5)
    rows = []
    for name, fn, eng in (("static batches", open_static, static), ("continuous loop", open_continuous, cont)):
        makespan, ttft, tokens = fn(eng, plan)
        rows.append(
            [
                name,
                str(n),
                str(tokens),
                f"{tokens / makespan:.0f}",
                f"{1000 * statistics.median(ttft):.0f}",
                f"{1000 * sorted(ttft)[int(0.9 * (len(ttft) - 1))]:.0f}",
            ]
        )
        print("open", rows[-1], flush=True)
    return rows


def ttft_beside_long(static: Engine, cont: Engine, shorts: int) -> list[list[str]]:
    """Short requests (1 token) while one 2,000-token generation runs, against the same requests on an idle engine."""
    short = GenerationRequest(
        render_chat([{"role": "user", "content": "Is the kettle good?"}]), SamplingParams(max_tokens=1, temperature=0.0)
    )
    long = request(0, 2000)
    rows = []
    driver = EngineDriver(cont, name="bench-loop")

    def one(req: GenerationRequest) -> float:
        q: queue.Queue = queue.Queue()
        t0 = time.perf_counter()
        driver.submit(cont.prepare(req), q.put, "stream")
        q.get(timeout=120)
        return time.perf_counter() - t0

    idle = statistics.median([one(short) for _ in range(shorts)])
    hold: queue.Queue = queue.Queue()
    long_seq = cont.prepare(long)
    driver.submit(long_seq, hold.put, "stream")
    hold.get(timeout=120)  # decoding now
    busy = statistics.median([one(short) for _ in range(shorts)])
    long_seq.cancel()
    driver.close()
    rows.append(["continuous loop", f"{1000 * idle:.1f}", f"{1000 * busy:.1f}", f"{busy / idle:.1f}x"])
    # Static: a request that arrives during a batch waits for all of it; measure that wait once.
    t_idle, _ = timed(lambda: static.generate([short]), 3)
    t0 = time.perf_counter()
    static.generate([long])
    t_long = time.perf_counter() - t0
    waits = t_long / 2 + t_idle  # arriving at a uniformly random moment of the long batch
    rows.append(["static batches", f"{1000 * t_idle:.1f}", f"{1000 * waits:.1f}", f"{waits / t_idle:.1f}x"])
    print("ttft", rows, flush=True)
    return rows


def instruction(engine: Engine, tokens: int) -> str:
    """A classification instruction of about ``tokens`` tokens (definitions and examples, as real ones have)."""
    parts = ["Classify the customer review as one of: {labels}. Answer with the label only."]
    extra = [
        "A positive review praises the product, its quality, its price or the service around it.",
        "A negative review complains about defects, delays, poor quality or a bad experience.",
        "A neutral review reports facts or mixed feelings without a clear verdict either way.",
        "Judge the review as a whole, not single words; sarcasm counts as what it means.",
        "Ignore the product category; only the writer's opinion of it matters here.",
    ]
    i = 0
    while len(engine.encode(" ".join(parts))) < tokens:
        parts.append(extra[i % len(extra)])
        i += 1
    return " ".join(parts)


def label_rows(plain: Engine, cached: Engine, n: int, repeats: int) -> tuple[list[list[str]], float, int, int]:
    data = reviews(n, seed=11, held_out=True)
    inst = instruction(plain, 200)
    texts = [f"{r.text} I bought it last month for the kitchen and have used it every day since then." for r in data]
    prompts = [classification_prompt(t, LABELS, inst) for t in texts]
    p_tokens = [len(plain.validator.encode_prompt(p)) for p in prompts]
    t_plain, scored_plain = timed(lambda: plain.score_labels(prompts, list(LABELS)), repeats)

    def fresh_cache_then_score():
        cached.loop().prefix_cache.clear()  # every repeat starts cold: the instruction is computed once per run
        return cached.score_labels(prompts, list(LABELS))

    t_cached, scored_cached = timed(fresh_cache_then_score, repeats)
    params = SamplingParams(max_tokens=4, temperature=0.0)

    def fresh_cache_then_generate():
        cached.loop().prefix_cache.clear()
        return cached.generate([GenerationRequest(p, params) for p in prompts])

    t_gen, generated = timed(fresh_cache_then_generate, repeats)
    t_gen_plain, gen_plain = timed(lambda: plain.generate([GenerationRequest(p, params) for p in prompts]), repeats)
    diff = max(
        abs(a.logprobs[k] - b.logprobs[k]) for a, b in zip(scored_plain, scored_cached, strict=True) for k in LABELS
    )
    acc = sum(s.label == r.label for s, r in zip(scored_cached, data, strict=True)) / n
    acc_gen = sum(g.text.strip() == r.label for g, r in zip(generated, data, strict=True)) / n
    acc_gen_plain = sum(g.text.strip() == r.label for g, r in zip(gen_plain, data, strict=True)) / n
    rows = [
        ["scoring, prefix reuse off", f"{n / t_plain:.0f}", "1.00x", f"{acc:.1%}"],
        ["scoring, prefix reuse on", f"{n / t_cached:.0f}", f"{t_plain / t_cached:.2f}x", f"{acc:.1%}"],
        [
            "generate the label (4 tokens), prefix reuse off",
            f"{n / t_gen_plain:.0f}",
            f"{t_plain / t_gen_plain:.2f}x",
            f"{acc_gen_plain:.1%}",
        ],
        [
            "generate the label (4 tokens), prefix reuse on",
            f"{n / t_gen:.0f}",
            f"{t_plain / t_gen:.2f}x",
            f"{acc_gen:.1%}",
        ],
    ]
    print("labels", rows, flush=True)
    return rows, diff, statistics.median(p_tokens), len(plain.encode(inst))


STRUCTURED_HEADER = ["batch", "tokens (32 requests)", "free tok/s", "constrained tok/s", "constrained / free", "valid"]


def structured_rows(engine: Engine, sizes: list[int], repeats: int) -> list[list[str]]:
    """Tokens/s constrained to the review schema against the same prompts free, each free request held to the
    token count its constrained twin produced (ignore_eos), so both generate exactly the same number of tokens.
    The same 32 requests at every batch size (run as 32/n batches one after another), so every row times ~450
    tokens; the two runs alternate within each repeat, medians of ``repeats + 2``."""
    schema = review_schema(["sentiment", "product"], LABELS)
    fmt = response_format_of({"type": "json_schema", "json_schema": {"name": "review", "schema": schema}})
    prompts = [extraction_prompt(r.text, json.dumps(schema)) for r in reviews(32, seed=3, held_out=True)]
    constrained = [
        GenerationRequest(p, SamplingParams(max_tokens=64, temperature=0.0, response_format=fmt)) for p in prompts
    ]
    outs = engine.generate(constrained)
    counts = [o.completion_tokens for o in outs]
    free = [
        GenerationRequest(p, SamplingParams(max_tokens=c, temperature=0.0, ignore_eos=True))
        for p, c in zip(prompts, counts, strict=True)
    ]
    valid = sum(_valid(o.text, schema) for o in outs)
    tokens = sum(counts)
    rows = []
    for n in sizes:

        def run(reqs: list[GenerationRequest], n: int = n) -> float:
            start = time.perf_counter()
            for i in range(0, len(reqs), n):
                engine.generate(reqs[i : i + n])
            return time.perf_counter() - start

        times: dict[str, list[float]] = {"free": [], "json": []}
        for _ in range(repeats + 2):
            times["free"].append(run(free))
            times["json"].append(run(constrained))
        t_free, t_json = statistics.median(times["free"]), statistics.median(times["json"])
        rows.append(
            [
                str(n),
                str(tokens),
                f"{tokens / t_free:.0f}",
                f"{tokens / t_json:.0f}",
                f"{t_free / t_json:.2f}x",
                f"{valid}/32",
            ]
        )
    return rows


def _valid(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and rows (smoke run)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    repeats = 1 if args.quick else 3
    torch.set_num_threads(1)
    static = Engine(EngineConfig(batching="static"))
    cont = Engine(EngineConfig(batching="continuous"))
    plain = Engine(EngineConfig(batching="continuous", prefix_caching=False))
    closed = closed_batches(static, cont, [1, 8, 32], repeats)
    n_open = 24 if args.quick else 64
    opened = open_rows(static, cont, n_open, rate=8.0)
    ttft = ttft_beside_long(static, cont, 3 if args.quick else 8)
    labels, diff, p_len, inst_len = label_rows(plain, cont, 64 if args.quick else 256, repeats)
    structured = structured_rows(cont, [1, 8, 32], repeats)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, no GPU"
    report = f"""# Engine on CPU (phi4-tiny)

Machine: {machine}. Produced by `bench/engine_cpu.py`; medians of {repeats} runs after a warm-up.
Model: {static.model_name} ({sum(p.numel() for p in static.hf_model.parameters()):,} parameters), backend
deepspeed (init_inference, tp 1), fp32, greedy decoding. "static" is the length-bucketed lock-step batcher
(`batching: static`); "continuous" the iteration-level loop over the paged KV pool (the default).

## Closed batches, 32 tokens per request (generated tokens/s)

{md_table(["batch", "tokens", "static tok/s", "continuous tok/s", "continuous / static", "same tokens"], closed)}

## Open arrivals: Poisson at 8 requests/s, 16-512 output tokens each

Static: whatever has arrived when the engine is idle forms the next batch (what a server in front of it does).

{md_table(["engine", "requests", "tokens", "tok/s", "p50 time to first token (ms)", "p90 (ms)"], opened)}

## Time to first token of a short request beside a 2,000-token generation

{md_table(["engine", "idle (ms)", "beside the long generation (ms)", "ratio"], ttft)}

Static: measured idle, and the expected wait of a request that arrives at a random moment of the long batch.

## Label scoring: a {inst_len}-token shared instruction, prompts of {p_len:.0f} tokens (median), 3 labels

{md_table(["path", "prompts/s", "vs scoring without reuse", "accuracy"], labels)}

Largest |log-probability difference| between scoring with and without prefix reuse: {diff:.2e}.

## Structured output: the review schema (`sentiment` enum, `product` string) against free text, same tokens

Each free request generates exactly as many tokens as its constrained twin did (ignore_eos), from the same
extraction prompt; the grammar's cost is the bitmask filled on the host per constrained row and step (xgrammar)
and the masked copy of the logits.

{md_table(STRUCTURED_HEADER, structured)}
"""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
