"""Run a job on Ray Data: read -> keys (duplicate pass) -> the declared stages (prepare -> replica -> write).

The driver resolves the model, lists the input, loads what earlier runs committed, checks that the
stage list lines up, and then only streams small per-shard tallies back; rows never pass through it.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fsspec
import ray

from phifleet.engine.loading import resolve_model
from phifleet.jobs.config import JobConfig
from phifleet.jobs.durable import write_atomic
from phifleet.jobs.kinds import job_kind
from phifleet.jobs.output import MANIFEST_FILE, OutputFolder
from phifleet.jobs.progress import Progress, quiet_ray_data
from phifleet.jobs.sinks import ERRORS_DIR, RESULTS_DIR, Committed
from phifleet.jobs.sources import RAW_SCHEMA, bytes_per_row, expand_paths, read_files, read_options
from phifleet.jobs.stages import SUMMARY_SCHEMA, Stage, StageSpec, check_stages, default_stages, keys_stage

# A prepared row carries its raw text plus the rendered prompt: about three times the stored row.
BLOCK_BYTES_PER_ROW_FACTOR = 3
# Values the stages get only once the run starts: the (done, duplicate) row keys, in the object store.
RUN_INPUTS = ("skip_ref",)

StagesFactory = Callable[[StageSpec], list[Stage]]


def init_ray(address: str | None, runtime_env: dict[str, Any] | None = None) -> None:
    """Join ``address`` (or RAY_ADDRESS), else start an embedded local Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
    else:
        ray.init(include_dashboard=False, log_to_driver=True, runtime_env=runtime_env)


def find_duplicates(raw: ray.data.Dataset, spec: StageSpec) -> tuple[set[tuple[str, int]], int]:
    """(file, line) of every later occurrence of an id, and the number of input rows."""
    first: dict[str, tuple[str, int]] = {}
    duplicates: set[tuple[str, int]] = set()
    rows = 0
    keys = keys_stage(spec).apply(raw, {})
    for batch in keys.iter_batches(batch_size=4096, batch_format="pyarrow"):
        for rid, source, line in zip(*(batch[c].to_pylist() for c in ("id", "source", "line")), strict=True):
            rows += 1
            if rid is None:
                continue
            here = (source, line)
            seen = first.get(rid)
            if seen is None:
                first[rid] = here
            else:  # keep the earliest (file, line) whatever order the blocks arrive in
                duplicates.add(max(seen, here))
                first[rid] = min(seen, here)
    return duplicates, rows


def run_job(
    config: JobConfig,
    stages: StagesFactory = default_stages,
    runtime_env: dict[str, Any] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run ``config`` to completion (or resume it) and write its manifest.

    ``stages`` builds the main pass from the resolved spec (tests wrap a stage to inject a real crash);
    ``runtime_env`` is Ray's, for the embedded Ray this starts (e.g. ``py_modules`` those stages need).
    The output folder is held for the whole run (jobs/output.py: ownership, identity, lock) and let go however
    the run ends.
    """
    quiet_ray_data(verbose)  # the live progress line instead of Ray Data's operator chatter (kept for -v)
    with OutputFolder(config) as output:
        return _run_job(config, stages, runtime_env, output)


def _run_job(
    config: JobConfig, stages: StagesFactory, runtime_env: dict[str, Any] | None, output: OutputFolder
) -> dict[str, Any]:
    started, started_mono = time.time(), time.monotonic()
    model = resolve_model(config.engine)
    spec = StageSpec(config.model_dump_json(), str(model.path), model.context_window, model.served_name)
    pipeline = stages(spec)
    check_stages(pipeline, RAW_SCHEMA.names, SUMMARY_SCHEMA.names, RUN_INPUTS)
    check_stages([keys_stage(spec)], RAW_SCHEMA.names)
    urls = expand_paths(config.input.path, config.input.format)
    before = output.open(model, urls)  # refuses a foreign folder, another job's rows or a second writer
    init_ray(config.address, runtime_env)

    pool = config.pool
    # Blocks of about one replica batch: stages stream into each other and every replica gets work. Ray's
    # default (128 MiB blocks) would turn a small file into one block, read and prepared before any inference.
    ctx = ray.data.DataContext.get_current()
    ctx.target_max_block_size = int(
        min(
            128 << 20,
            max(64 << 10, BLOCK_BYTES_PER_ROW_FACTOR * pool.batch_size * bytes_per_row(urls, config.input.format)),
        )
    )
    files = ray.data.from_items([{"url": u} for u in urls])
    raw = files.map_batches(
        read_files,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={**read_options(config.input), "chunk_rows": pool.batch_size},
    )
    duplicates, input_rows = find_duplicates(raw, spec)
    inputs = {"skip_ref": ray.put((frozenset(before.keys), frozenset(duplicates)))}
    ds = raw
    for stage in pipeline:
        ds = stage.apply(ds, inputs)

    run = Counter()
    labels: Counter[str] = Counter()
    progress = Progress(input_rows, done=len(before.keys), started=started_mono)
    try:
        for summary in ds.iter_rows():
            for key in ("ok", "errors", "prompt_tokens", "completion_tokens"):
                run[key] += summary[key]
            run["shards"] += 1
            labels.update(json.loads(summary["labels"]))
            progress.update(summary["ok"] + summary["errors"], summary["prompt_tokens"] + summary["completion_tokens"])
    finally:
        progress.close()

    wall = time.time() - started
    return _manifest(config, model.served_name, before, run, labels, input_rows, started, wall, progress)


def _manifest(
    config: JobConfig,
    model_name: str,
    before: Committed,
    run: Counter[str],
    labels: Counter[str],
    input_rows: int,
    started: float,
    wall: float,
    progress: Progress,
) -> dict[str, Any]:
    ok, errors = before.ok + run["ok"], before.errors + run["errors"]
    startup = min(progress.startup_s, wall)
    rows_s, tokens_s = progress.rates()
    processed = run["ok"] + run["errors"]
    tokens = run["prompt_tokens"] + run["completion_tokens"]
    manifest: dict[str, Any] = {
        "job": config.model_dump(mode="json"),
        "model": model_name,
        "counts": {
            "input": input_rows,
            "ok": ok,
            "errors": errors,
            "resumed": before.ok + before.errors,
            "processed": processed,
            "accounted": ok + errors == input_rows,
        },
        "tokens": {
            "prompt": before.prompt_tokens + run["prompt_tokens"],
            "completion": before.completion_tokens + run["completion_tokens"],
        },
        "throughput": {"rows_per_s": processed / wall if wall else 0.0, "tokens_per_s": tokens / wall if wall else 0.0},
        # Start-up (starting Ray, fingerprints, the duplicate-id pass, the model's load, the first block) apart
        # from the rate once rows flow: first committed block to last (0 for a job of one block).
        "startup_seconds": round(startup, 3),
        "processing": {"rows_per_s": rows_s, "tokens_per_s": tokens_s},
        "wall_seconds": round(wall, 3),
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "outputs": {"results": f"{RESULTS_DIR}/", "errors": f"{ERRORS_DIR}/"},
    }
    job_kind(config, model_name).finish(manifest, before.labels + labels)
    fs, root = fsspec.core.url_to_fs(config.output.path)
    write_atomic(fs, f"{root.rstrip('/')}/{MANIFEST_FILE}", json.dumps(manifest, indent=2).encode())
    return manifest


def summary_text(manifest: dict[str, Any]) -> str:
    c = manifest["counts"]
    wall, startup = manifest["wall_seconds"], manifest.get("startup_seconds", 0.0)
    processing = manifest.get("processing") or {}
    if not c["processed"]:
        rate = "nothing left to do"
    elif processing.get("rows_per_s"):
        rate = f"then {processing['rows_per_s']:.1f} rows/s, {processing['tokens_per_s']:.0f} tokens/s"
    else:  # blocks that finished together (a small job) have no span to rate: say so, and the whole job's rate
        overall = manifest["throughput"]
        rate = (
            f"then every block within {max(wall - startup, 0.0):.1f}s of the first (too short to rate; "
            f"{overall['rows_per_s']:.1f} rows/s, {overall['tokens_per_s']:.0f} tokens/s over the whole job)"
        )
    kind = manifest["job"]["task"]["kind"]
    lines = [
        f"phifleet {kind}: {c['input']} rows -> {c['ok']} ok, {c['errors']} errors "
        f"({c['resumed']} done by an earlier run, {c['processed']} now) in {wall:.1f}s: "
        f"start-up {startup:.1f}s (Ray, the duplicate-id pass, loading the model, the first block), {rate}",
    ]
    if "labels" in manifest:
        total = sum(manifest["labels"].values()) or 1
        lines.append("labels: " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in manifest["labels"].items()))
    out = manifest["job"]["output"]["path"]
    lines.append(f"output: {out}/{RESULTS_DIR}/  errors: {out}/{ERRORS_DIR}/  manifest: {out}/manifest.json")
    if not c["accounted"]:
        lines.append("WARNING: ok + errors does not equal the input rows")
    return "\n".join(lines)
