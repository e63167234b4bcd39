"""Engine throughput on CPU with phi4-tiny, as ratios measured in one run.

- generated tokens/s, static vs continuous batching, at batch 1/8/32 (identical greedy tokens);
- labels/s, label scoring vs labelling by greedy generation of the label word.

Writes bench/results/engine_cpu.md. Run: `make bench` (or `python bench/engine_cpu.py --quick`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from phifleet.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from phifleet.engine.chat_template import render_chat
from phifleet.engine.prompts import classification_prompt
from phifleet.engine.tiny.corpus import LABELS, reviews

RESULTS = Path(__file__).parent / "results" / "engine_cpu.md"


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time over ``repeats`` runs after one warm-up run."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def generation_requests(n: int, max_tokens: int) -> list[GenerationRequest]:
    products = ["blender", "kettle", "lamp", "tent", "laptop", "chair", "phone", "desk"]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return [
        GenerationRequest(
            render_chat([{"role": "user", "content": f"Write a {LABELS[i % 3]} review of a {products[i % 8]}."}]),
            params,
        )
        for i in range(n)
    ]


def bench_batching(static: Engine, cont: Engine, batches: list[int], repeats: int) -> list[list[str]]:
    rows = []
    for n in batches:
        reqs = generation_requests(n, max_tokens=32)
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
                f"{t_cont / t_static:.1f}x",
                "yes" if same else "NO",
            ]
        )
        print("batch", n, rows[-1], flush=True)
    return rows


def bench_labels(engine: Engine, n: int, repeats: int) -> list[str]:
    data = reviews(n, seed=11, held_out=True)
    prompts = [classification_prompt(r.text, LABELS) for r in data]
    t_score, scored = timed(lambda: engine.score_labels(prompts, list(LABELS)), repeats)
    params = SamplingParams(max_tokens=4, temperature=0.0)
    t_gen, generated = timed(lambda: engine.generate([GenerationRequest(p, params) for p in prompts]), repeats)
    acc_score = sum(s.label == r.label for s, r in zip(scored, data, strict=True)) / n
    acc_gen = sum(g.text.strip() == r.label for g, r in zip(generated, data, strict=True)) / n
    row = [
        str(n),
        f"{n / t_score:.0f}",
        f"{n / t_gen:.0f}",
        f"{t_gen / t_score:.1f}x",
        f"{acc_score:.1%}",
        f"{acc_gen:.1%}",
    ]
    print("labels", row, flush=True)
    return row


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and rows (smoke run)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    repeats = 1 if args.quick else 3
    torch.set_num_threads(1)
    static = Engine(EngineConfig(batching="static"))
    cont = Engine(EngineConfig(batching="continuous"))
    batch_rows = bench_batching(static, cont, [1, 8, 32], repeats)
    label_row = bench_labels(static, 64 if args.quick else 512, repeats)
    cont.close()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, no GPU"
    report = f"""# Engine on CPU (phi4-tiny)

Machine: {machine}. Produced by `bench/engine_cpu.py`; medians of {repeats} runs after a warm-up.
Model: {static.model_name} ({sum(p.numel() for p in static.hf_model.parameters()):,} parameters),
backend deepspeed (init_inference, tp 1), fp32, greedy decoding, up to 32 new tokens.

## Static vs continuous batching (generated tokens/s)

{table(["batch", "tokens", "static tok/s", "continuous tok/s", "static speed-up", "same tokens"], batch_rows)}

## Label scoring vs generate-to-label (labels/s, batch {static.max_batch_size})

{
        table(
            ["rows", "scoring labels/s", "generate labels/s", "scoring speed-up", "scoring acc", "generate acc"],
            [label_row],
        )
    }
"""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
