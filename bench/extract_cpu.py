"""Extract's enum/boolean scoring: the whole block in one engine call against one scoring pass per field per row.

The same rows through ``ExtractKind.run`` (no Ray) in blocks of the jobs' default batch size, on phi4-tiny (CPU):
"batched" is the kind as it is (``Engine.score_continuations_each``: every field of every row in one call, many
prompts to a forward pass), "per field" the path it replaced (``Engine.score_continuations`` once per field per
row). Both generate the same objects; only the scoring differs, so the table gives rows/s of the whole kind and of
its scoring alone, the scoring's forward passes, and the largest log-probability difference between the paths.
Two schemas: README's review schema (one enum) and the same with a boolean (two scored fields per row).

Writes bench/results/extract_cpu.md. Run: `python bench/extract_cpu.py` (`--quick`: fewer rows, one repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from bench_tables import md_table

from phifleet.engine import Engine, EngineConfig
from phifleet.engine.tiny.build import review_schema
from phifleet.jobs.config import ExtractTask, InputConfig, JobConfig, OutputConfig
from phifleet.jobs.kinds.extract import ExtractKind

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "extract_cpu.md"
REVIEWS = ROOT / "examples" / "reviews.jsonl"
LABELS = ["positive", "negative", "neutral"]
BLOCK = 64  # PoolConfig.batch_size: the rows one replica call gets


class Scoring:
    """The engine, timing its scoring and counting the forward passes in it; ``per_field`` scores one pass per
    field per row, as extract did before."""

    def __init__(self, engine: Engine, per_field: bool) -> None:
        self.engine, self.per_field = engine, per_field
        self.seconds, self.passes = 0.0, 0
        self._scoring = 0  # 1 inside a scoring call: the generation's passes are not counted
        runner = engine.loop().runner
        self._forward = runner.forward
        runner.forward = self._counted  # an instance attribute over the method; ``close`` removes it

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def _counted(self, batch):
        self.passes += self._scoring
        return self._forward(batch)

    def score_continuations_each(self, items):
        start, self._scoring = time.perf_counter(), 1
        try:
            if self.per_field:
                return [self.engine.score_continuations(p, o) for p, o in items]
            return self.engine.score_continuations_each(items)
        finally:
            self._scoring = 0
            self.seconds += time.perf_counter() - start

    def close(self) -> None:
        del self.engine.loop().runner.forward


def schemas() -> dict[str, dict]:
    one = review_schema(["sentiment", "product"], LABELS)
    two = json.loads(json.dumps(one))
    two["properties"]["recommended"] = {"type": "boolean"}
    two["required"].append("recommended")
    return {"sentiment enum (README)": one, "sentiment enum + boolean": two}


def run_once(engine: Engine, kind: ExtractKind, blocks: list, per_field: bool) -> tuple[float, float, int, list]:
    """(seconds, scoring seconds, scoring forward passes, outputs) for every block, from a cold prefix cache."""
    engine.loop().prefix_cache.clear()
    scoring = Scoring(engine, per_field)
    start = time.perf_counter()
    try:
        outputs = [out for block in blocks for out in kind.run(scoring, block)]
    finally:
        scoring.close()
    return time.perf_counter() - start, scoring.seconds, scoring.passes, outputs


def largest_difference(a: list, b: list) -> float:
    diff = 0.0
    for x, y in zip(a, b, strict=True):
        assert not isinstance(x, Exception) and not isinstance(y, Exception), (x, y)
        assert x["object"] == y["object"], (x["object"], y["object"])
        for name, values in x["logprobs"].items():
            diff = max(diff, *(abs(v - y["logprobs"][name][k]) for k, v in values.items()))
    return diff


def rows_for(engine: Engine, name: str, schema: dict, records: list, repeats: int) -> list[list[str]]:
    config = JobConfig(input=InputConfig(path="x"), output=OutputConfig(path="y"), task=ExtractTask(schema=schema))
    kind = ExtractKind(config, engine.model_name)
    prepared = [kind.prepare(r, r["id"], engine.validator) for r in records]
    blocks = [prepared[i : i + BLOCK] for i in range(0, len(prepared), BLOCK)]
    runs: dict[bool, list[tuple[float, float, int, list]]] = {False: [], True: []}
    for per_field in (False, True):  # warm-up
        run_once(engine, kind, blocks, per_field)
    for _ in range(repeats):  # alternated: the host's speed drifts
        for per_field in (False, True):
            runs[per_field].append(run_once(engine, kind, blocks, per_field))
    n = len(records)
    fields = len(kind.shape.choices)
    out = []
    medians = {}
    for per_field in (True, False):
        total = statistics.median(r[0] for r in runs[per_field])
        scoring = statistics.median(r[1] for r in runs[per_field])
        medians[per_field] = (total, scoring)
        out.append(
            [
                name,
                "per field" if per_field else "batched",
                f"{n / total:.1f}",
                f"{n / scoring:.1f}",
                str(runs[per_field][-1][2]),
            ]
        )
    diff = largest_difference(runs[False][-1][3], runs[True][-1][3])
    (t_pf, s_pf), (t_b, s_b) = medians[True], medians[False]
    for row, ratios in zip(out, (("1.00x", "1.00x"), (f"{t_pf / t_b:.2f}x", f"{s_pf / s_b:.2f}x")), strict=True):
        row += [*ratios, f"{diff:.1e}"]
    print(name, f"({fields} scored field(s))", out, flush=True)
    return out


HEADER = ["schema", "scoring", "rows/s (whole kind)", "rows/s (scoring)", "scoring passes", "whole", "scoring"]
HEADER += ["max abs log-prob diff"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 rows, one repeat (smoke run)")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows_n, repeats = (64, 1) if args.quick else (args.rows, 5)
    records = [json.loads(line) for line in REVIEWS.read_text().splitlines() if line.strip()][:rows_n]
    engine = Engine(EngineConfig())
    table = [row for name, schema in schemas().items() for row in rows_for(engine, name, schema, records, repeats)]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, no GPU"
    report = f"""# Extract on CPU (phi4-tiny): enum/boolean scoring batched per block vs one pass per field

Machine: {machine}. Produced by `bench/extract_cpu.py`; medians of {repeats} alternated runs after a warm-up.
{len(records)} rows of `examples/reviews.jsonl` through `ExtractKind.run` in blocks of {BLOCK} (no Ray), greedy,
the default engine (continuous, prefix reuse on, cold cache at the start of each run). Both paths generate the
same objects; "scoring" columns time the scoring calls alone. Ratios are per field / batched time. The whole
kind's rows/s include the generation, the same work on both paths, and drift with the host's load: the scoring
columns are the comparison.

{md_table(HEADER, table)}
"""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
