"""Phi-4 at its real shapes on one GPU: DeepSpeed-inference replicas measured through phifleet's engine.

No weights can be downloaded here, so the model is Phi-4's exact config (Phi3ForCausalLM, 40 layers,
hidden 5120, intermediate 17920, 40 heads over 10 KV heads, vocab 100352, bf16) with random weights
created directly on the GPU: the same bytes moved and FLOPs done as the real model. A synthetic
word-level tokenizer with Phi-4's vocabulary size and special-token ids stands in for the real one, so
requests go through the full engine path (tokenize, batch, decode, detokenize).

Every case is a median over repeats after a warm-up. The markdown table is printed last and written to
$OUT/gpu.md (and JSON to $OUT/gpu.json). `--tiny` runs the same code end to end on CPU at toy shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from phifleet.engine import Engine, EngineConfig, GenerationRequest, SamplingParams  # noqa: E402
from phifleet.engine.chat_template import ENDOFTEXT, IM_END, IM_SEP, IM_START, PAD  # noqa: E402

PHI4 = dict(
    vocab_size=100352,
    hidden_size=5120,
    intermediate_size=17920,
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=10,
    max_position_embeddings=16384,
    rope_theta=250000.0,
    tie_word_embeddings=False,
)
TINY = dict(
    PHI4, hidden_size=256, intermediate_size=896, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2
)
# Phi-4's special-token ids in its 100352-entry vocabulary.
SPECIAL_IDS = {ENDOFTEXT: 100257, IM_START: 100264, IM_END: 100265, IM_SEP: 100266, PAD: 100349}
UNK = "<|dummy_0|>"


def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: token i is the word 't{i}', special tokens at Phi-4's ids."""
    vocab = {f"t{i}": i for i in range(vocab_size)}
    for tok, i in {**SPECIAL_IDS, UNK: 100256}.items():
        del vocab[f"t{i}"]
        vocab[tok] = i
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[IM_START, IM_SEP],
    )


def random_text(rng: random.Random, n_tokens: int) -> str:
    reserved = set(SPECIAL_IDS.values()) | {100256}
    ids = []
    while len(ids) < n_tokens:
        i = rng.randrange(100000)
        if i not in reserved:
            ids.append(i)
    return " ".join(f"t{i}" for i in ids)


def build_model(shape: dict, device: str, dtype: torch.dtype) -> Phi3ForCausalLM:
    """Random weights created on the target device in the target dtype (never a CPU fp32 copy)."""
    cfg = Phi3Config(
        pad_token_id=SPECIAL_IDS[PAD], bos_token_id=SPECIAL_IDS[ENDOFTEXT], eos_token_id=SPECIAL_IDS[IM_END], **shape
    )
    cfg.name_or_path = "phi-4-shaped-random"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Phi3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> tuple[float, object, float]:
    """(median seconds, last output, peak GiB allocated) over ``repeats`` runs after one warm-up."""
    fn()
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times, out = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return statistics.median(times), out, peak


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.rows: list[dict[str, object]] = []
        self.notes: list[str] = []
        self.rng = random.Random(0)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_s

    def case(self, name: str, fn) -> None:
        """Run one case; a failure or the time budget skips it with a note instead of ending the run."""
        if self.args.only and name not in self.args.only.split(","):
            return
        if self.over_budget():
            self.notes.append(f"{name}: skipped, time budget of {self.args.budget_s}s spent")
            print(f"SKIP {name} (budget)", flush=True)
            return
        t0 = time.perf_counter()
        try:
            for row in fn():
                row = {"case": name, **row}
                self.rows.append(row)
                print("ROW", json.dumps(row), flush=True)
        except Exception as exc:  # record and go on: one broken case must not cost the whole lease
            self.notes.append(f"{name}: FAILED {type(exc).__name__}: {str(exc)[:300]}")
            traceback.print_exc()
        print(
            f"-- {name} took {time.perf_counter() - t0:.1f}s (total {time.perf_counter() - self.started:.0f}s)",
            flush=True,
        )
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()

    def gen_requests(self, n: int, prompt_len: int, out_len: int) -> list[GenerationRequest]:
        params = SamplingParams(max_tokens=out_len, temperature=0.0)
        return [GenerationRequest(random_text(self.rng, prompt_len), params) for _ in range(n)]


def engine_for(model, tok, backend: str, batching: str, args, max_batch_size: int | None = None) -> Engine:
    rows = max_batch_size or max(args.batches)
    cfg = EngineConfig(
        backend=backend,
        batching=batching,
        device=args.device,
        dtype=args.dtype,
        max_batch_size=rows,
        max_batch_tokens=rows * (max(args.prompt, args.score_len) + args.output),
    )
    return Engine.from_model(model, tok, cfg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU, toy shapes: proves the script end to end")
    ap.add_argument("--budget-s", type=float, default=400, help="stop starting new cases after this many seconds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated case names to run (default: all)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench" / "results")))
    ap.add_argument(
        "--render",
        type=Path,
        nargs="+",
        default=None,
        help="render the markdown of saved run JSON files (no model is built) to stdout",
    )
    args = ap.parse_args()
    if args.render:
        print(render([json.loads(p.read_text()) for p in args.render]), end="")
        return 0
    if args.tiny:
        torch.set_num_threads(1)
        args.device, args.dtype, shape = "cpu", "float32", TINY
        args.batches, args.prompt, args.output, args.decode_tokens = [2, 4], 32, 8, 16
        args.score_prompts, args.score_len = 8, 32
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --tiny on CPU", file=sys.stderr)
            return 2
        args.device, args.dtype, shape = "cuda", "bfloat16", PHI4
        args.batches, args.prompt, args.output, args.decode_tokens = [8, 32, 128], 512, 128, 128
        args.score_prompts, args.score_len = 256, 256
    bench = Bench(args)
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    model = build_model(shape, args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    weight_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    built_s = time.perf_counter() - t0
    print(f"built {n_params / 1e9:.2f}B params ({weight_gib:.1f} GiB) on {args.device} in {built_s:.1f}s", flush=True)
    tok = synthetic_tokenizer(shape["vocab_size"])
    ds_static = engine_for(model, tok, "deepspeed", "static", args)
    hf_static = engine_for(model, tok, "hf", "static", args)
    print(f"deepspeed engine: {type(ds_static.model).__module__}.{type(ds_static.model).__name__}", flush=True)

    def check_logits():
        ids = torch.tensor([ds_static.encode(random_text(bench.rng, 64))], device=args.device)
        with torch.inference_mode():
            a, b = ds_static.model(input_ids=ids).logits, hf_static.model(input_ids=ids).logits
        yield {"metric": "max |logits ds - hf|", "value": float((a.float() - b.float()).abs().max())}

    def single_stream(engine, label):
        def run():
            req = bench.gen_requests(1, 128 if not args.tiny else 16, args.decode_tokens)
            t, out, peak = timed(lambda: engine.generate(req), args.repeats)
            toks = out[0].completion_tokens
            yield {"backend": label, "batch": 1, "tokens": toks, "tok_s": toks / t, "seconds": t, "peak_gib": peak}

        return run

    def batched(engine, label, batches):
        def run():
            for b in batches:
                reqs = bench.gen_requests(b, args.prompt, args.output)
                t, out, peak = timed(lambda r=reqs: engine.generate(r), args.repeats)
                toks = sum(o.completion_tokens for o in out)
                yield {
                    "backend": label,
                    "batch": b,
                    "tokens": toks,
                    "tok_s": toks / t,
                    "seconds": t,
                    "peak_gib": peak,
                    "first_ids": [list(o.token_ids[:8]) for o in out[:2]],
                }

        return run

    labels = ["t501", "t502 t503", "t504 t505 t506"]

    def scoring(engine, label):
        def run():
            prompts = [random_text(bench.rng, args.score_len) for _ in range(args.score_prompts)]
            t, _, peak = timed(lambda: engine.score_labels(prompts, labels), args.repeats)
            yield {
                "backend": label,
                "batch": engine.max_batch_size,
                "prompts": len(prompts),
                "prompts_s": len(prompts) / t,
                "seconds": t,
                "peak_gib": peak,
            }

        return run

    bench.case("device ceilings", lambda: ceilings(args))
    bench.case("logits deepspeed vs hf", check_logits)

    def raw_decode():
        """The same single stream as a bare forward loop (no engine): separates engine cost from eager launches."""
        from transformers import DynamicCache

        ids = torch.tensor([ds_static.encode(random_text(bench.rng, 128 if not args.tiny else 16))], device=args.device)

        def loop():
            with torch.inference_mode():
                cache = DynamicCache()
                out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
                for _ in range(args.decode_tokens - 1):
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                    out = model(input_ids=nxt, cache=cache, use_cache=True, logits_to_keep=1)
                return out

        t, _, peak = timed(loop, args.repeats)
        yield {
            "backend": "bare forward loop",
            "batch": 1,
            "tokens": args.decode_tokens,
            "tok_s": args.decode_tokens / t,
            "seconds": t,
            "peak_gib": peak,
        }

    bench.case("single-stream decode", single_stream(ds_static, "deepspeed"))
    bench.case("bare decode loop", raw_decode)
    bench.case("single-stream decode", single_stream(hf_static, "hf"))
    score_bs = 32 if not args.tiny else 4
    bench.case("label scoring", scoring(engine_for(model, tok, "deepspeed", "static", args, score_bs), "deepspeed"))
    bench.case("label scoring", scoring(engine_for(model, tok, "hf", "static", args, score_bs), "hf"))
    bench.case("static batching", batched(ds_static, "deepspeed", args.batches))
    bench.case("static batching", batched(hf_static, "hf", args.batches[1:2]))
    ds_cont = Engine.from_model(
        model,
        tok,
        EngineConfig(
            backend="deepspeed",
            batching="continuous",
            device=args.device,
            dtype=args.dtype,
            max_batch_size=max(args.batches),
            max_batch_tokens=max(args.batches) * (args.prompt + args.output),
        ),
    )
    bench.case("continuous batching", batched(ds_cont, "deepspeed", args.batches))

    def agreement():
        reqs = bench.gen_requests(args.batches[0], args.prompt, 32)
        a, b = ds_static.generate(reqs), ds_cont.generate(reqs)
        same = sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True))
        prefix = [
            next(
                (i for i, (p, q) in enumerate(zip(x.token_ids, y.token_ids, strict=False)) if p != q), len(x.token_ids)
            )
            for x, y in zip(a, b, strict=True)
        ]
        yield {"metric": f"static vs continuous: identical greedy outputs (of {len(reqs)}, 32 tokens)", "value": same}
        yield {
            "metric": "static vs continuous: mean tokens before first divergence",
            "value": sum(prefix) / len(prefix),
        }

    bench.case("static vs continuous agreement", agreement)
    with contextlib.suppress(Exception):
        ds_cont.close()
    bench.case("fastgen probe", lambda: fastgen_probe(bench))
    report(bench, args, n_params, weight_gib)
    return 0


def ceilings(args):
    """Measured copy bandwidth and bf16 matmul rate: the two ceilings every number is read against."""
    if args.tiny:
        return
    n = 2 * 2**30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    t, _, _ = timed(lambda: dst.copy_(src), 10)
    yield {"metric": "copy bandwidth TB/s (read+write)", "value": 2 * n / t / 1e12}
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t, _, _ = timed(lambda: x @ y, 10)
    yield {"metric": "bf16 matmul TFLOP/s (8192^3)", "value": 2 * 8192**3 / t / 1e12}


def fastgen_probe(bench: Bench):
    """DeepSpeed FastGen (inference v2) builds from a checkpoint directory and JIT-compiles ragged CUDA ops."""
    from deepspeed.inference.v2.model_implementations import phi3  # noqa: F401

    yield {"metric": "fastgen phi3 implementation importable", "value": 1}
    bench.notes.append(
        "FastGen: deepspeed.inference.v2 has a phi3 implementation (import ok), but its engine loads a "
        "checkpoint directory (build_hf_engine) and JIT-compiles its ragged CUDA kernels on first use; writing "
        "29 GB of random weights to disk plus that build does not fit a 15-minute lease, so it was not run."
    )


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def run_record(bench: Bench, args, n_params: int, weight_gib: float) -> dict[str, object]:
    import deepspeed
    import transformers

    meta = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "deepspeed": deepspeed.__version__,
        "parameters": n_params,
        "weight_gib": round(weight_gib, 2),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "score_len": args.score_len,
        "tiny": args.tiny,
    }
    return {"meta": meta, "rows": bench.rows, "notes": bench.notes}


def render(records: list[dict]) -> str:
    """Markdown for one or more runs on the same card (later runs add rows and metrics)."""
    meta = records[0]["meta"]
    rows = [r for rec in records for r in rec["rows"]]
    notes = [n for rec in records for n in rec["notes"]]
    lines = [
        f"# Phi-4 shapes on {meta['device']}{' (--tiny)' if meta['tiny'] else ''}",
        "",
        f"torch {meta['torch']}, transformers {meta['transformers']}, deepspeed {meta['deepspeed']}; "
        f"{meta['parameters'] / 1e9:.2f}B parameters, {meta['weight_gib']:.1f} GiB of {meta['dtype']} weights; "
        f"medians of {meta['repeats']} runs after a warm-up; greedy decoding; {len(records)} run(s) of "
        "`bench/gpu/phi4_gpu.py` on one machine.",
        "",
        "| case | backend | batch | tokens/prompts | throughput | seconds | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "metric" in r:
            continue
        thr = f"{r['tok_s']:.0f} tok/s" if "tok_s" in r else f"{r['prompts_s']:.1f} prompts/s"
        amount = r.get("tokens", r.get("prompts"))
        lines.append(
            f"| {r['case']} | {r['backend']} | {r['batch']} | {amount} | {thr} | {fmt(r['seconds'])} | "
            f"{fmt(r['peak_gib'])} |"
        )
    metrics: dict[str, list[float]] = {}
    for r in rows:
        if "metric" in r:
            metrics.setdefault(r["metric"], []).append(r["value"])
    lines.append("")
    lines += [f"- {k}: {', '.join(fmt(v) for v in vs)}" for k, vs in metrics.items()]
    bw = metrics.get("copy bandwidth TB/s (read+write)")
    mm = metrics.get("bf16 matmul TFLOP/s (8192^3)")
    if bw and mm:
        weight_bytes = meta["weight_gib"] * 2**30
        lines.append(
            "- ceiling, single-stream decode (all weights read once per token at the measured copy rate): "
            f"{statistics.mean(bw) * 1e12 / weight_bytes:.0f} tok/s"
        )
        flops = 2 * meta["parameters"] * meta["score_len"]
        lines.append(
            f"- ceiling, label scoring ({meta['score_len']}-token prompts at 60% of the measured matmul rate): "
            f"{0.6 * statistics.mean(mm) * 1e12 / flops:.0f} prompts/s"
        )
    lines += ["", *[f"- note: {n}" for n in dict.fromkeys(notes)]]
    return "\n".join(lines) + "\n"


def report(bench: Bench, args, n_params: int, weight_gib: float) -> None:
    record = run_record(bench, args, n_params, weight_gib)
    text = render([record])
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_tiny" if args.tiny else "gpu"
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps(record, indent=1))
    print("\n" + text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
