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
sys.path.append(str(ROOT))  # an installed phifleet (the GPU machine carries a wheel) comes first
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from phifleet.engine import Engine, EngineConfig, GenerationRequest, SamplingParams  # noqa: E402
from phifleet.engine.chat_template import ENDOFTEXT, IM_END, IM_SEP, IM_START, PAD  # noqa: E402
from phifleet.engine.structured_output import response_format_of  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # shapes.py beside this file
from shapes import PHI4, TINY  # noqa: E402

# Phi-4's special-token ids in its 100352-entry vocabulary.
SPECIAL_IDS = {ENDOFTEXT: 100257, IM_START: 100264, IM_END: 100265, IM_SEP: 100266, PAD: 100349}
UNK = "<|dummy_0|>"


#: Token ids 32-126 are the printable ASCII characters themselves, so a grammar (structured output) can spell JSON.
ASCII_IDS = range(32, 127)


def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: token i is the word 't{i}', special tokens at Phi-4's ids, ids 32-126 ASCII characters."""
    vocab = {f"t{i}": i for i in range(vocab_size)}
    for i in ASCII_IDS:
        del vocab[f"t{i}"]
        vocab[chr(i)] = i
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
        i = rng.randrange(ASCII_IDS.stop, 100000)  # words only: a character token is no 't{i}' word
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
        self.model_size = (0, 0.0)  # parameters, weight GiB: set once the model is built

    def save(self) -> None:
        """The JSON so far, after every case: a run cut off by its lease keeps what it measured."""
        record = run_record(self, self.args, *self.model_size)
        self.args.out.mkdir(parents=True, exist_ok=True)
        name = "gpu_tiny" if self.args.tiny else "gpu"
        (self.args.out / f"{name}.json").write_text(json.dumps(record, indent=1))

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
        self.save()

    def gen_requests(self, n: int, prompt_len: int, out_len: int) -> list[GenerationRequest]:
        params = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
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
    ap.add_argument("--new-only", action="store_true", help="skip the cases that measure the engine before")
    ap.add_argument("--fastgen-timeout-s", type=float, default=150, help="hard limit of the FastGen probe subprocess")
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
    bench.model_size = (n_params, weight_gib)
    tok = synthetic_tokenizer(shape["vocab_size"])
    bench.case("device ceilings", lambda: ceilings(args))
    kernel_error: list[float] = []
    bench.case("paged decode kernel", lambda: decode_kernel(args, kernel_error))
    # A Triton kernel that failed to build or disagrees with the reference must not decide the engine's numbers.
    attention = "triton" if kernel_error and kernel_error[0] < 0.05 else ("auto" if args.tiny else "torch")
    if not args.tiny and attention == "torch":
        bench.notes.append("continuous engine ran with the torch decode attention: the Triton kernel failed its check")
    rows = max(args.batches)
    kv_tokens = rows * (args.prompt + args.output) + 4096
    cont = Engine.from_model(
        model,
        tok,
        EngineConfig(
            backend="deepspeed",
            batching="continuous",
            device=args.device,
            dtype=args.dtype,
            max_batch_size=rows,
            kv_cache_tokens=kv_tokens,
            max_step_tokens=8192 if not args.tiny else 64,
            attention_kernel=attention,
        ),
    )
    eager = Engine.from_model(
        model,
        tok,
        EngineConfig(
            backend="deepspeed",
            batching="continuous",
            device=args.device,
            dtype=args.dtype,
            max_batch_size=8,
            kv_cache_tokens=8192,
            cuda_graphs=False,
            attention_kernel=attention,
        ),
    )
    print(f"continuous engine: KV pool {cont.loop().pool.capacity} blocks, triton {cont.loop().runner.use_triton}")

    def single_stream(engine, label):
        def run():
            req = bench.gen_requests(1, 128 if not args.tiny else 16, args.decode_tokens)
            t, out, peak = timed(lambda: engine.generate(req), args.repeats)
            toks = out[0].completion_tokens
            yield {"backend": label, "batch": 1, "tokens": toks, "tok_s": toks / t, "seconds": t, "peak_gib": peak}

        return run

    def batched(engine, label, batches, repeats=None):
        def run():
            for b in batches:
                reqs = bench.gen_requests(b, args.prompt, args.output)
                t, out, peak = timed(lambda r=reqs: engine.generate(r), repeats or args.repeats)
                toks = sum(o.completion_tokens for o in out)
                yield {
                    "backend": label,
                    "batch": b,
                    "tokens": toks,
                    "tok_s": toks / t,
                    "seconds": t,
                    "peak_gib": peak,
                }

        return run

    bench.case("single-stream decode", single_stream(cont, "continuous, CUDA graphs"))
    if not args.new_only:
        bench.case("single-stream decode", single_stream(eager, "continuous, eager"))
    failed = len(bench.notes)
    if not args.new_only:
        bench.case("batched generation", batched(cont, "continuous", args.batches, repeats=2))
    if len(bench.notes) > failed and not args.tiny:  # graphs failed: still measure the scheduler, eager
        bench.case("batched generation", batched(eager, "continuous, eager", args.batches[:1], repeats=1))
    if not args.new_only:
        bench.case("32 concurrent streams", lambda: concurrent_streams(bench, cont, 32 if not args.tiny else 4))
    bench.case("decode step breakdown", lambda: step_breakdown(bench, cont, [1, 32, 128] if not args.tiny else [1, 4]))
    bench.case("agreement with HF eager", lambda: agreement_with_hf(bench, cont, model))
    bench.case("structured output", lambda: structured_output(bench, cont, [1, 32] if not args.tiny else [1, 4]))
    bench.case("label scoring", lambda: scoring_continuous(bench, cont, shared=0))
    bench.case("label scoring", lambda: scoring_continuous(bench, cont, shared=128 if not args.tiny else 16))
    with contextlib.suppress(Exception):
        eager.close()
        cont.close()
    bench.case("fastgen probe", lambda: fastgen_probe(bench))
    if args.new_only:
        report(bench, args, n_params, weight_gib)
        return 0
    ds_static = engine_for(model, tok, "deepspeed", "static", args)
    bench.case("single-stream decode", single_stream(ds_static, "static (before)"))
    bench.case("batched generation", batched(ds_static, "static (before)", args.batches[-1:], repeats=1))

    def scoring(engine, label):
        def run():
            prompts = [random_text(bench.rng, args.score_len) for _ in range(args.score_prompts)]
            t, _, peak = timed(lambda: engine.score_labels(prompts, LABELS), args.repeats)
            yield {
                "backend": label,
                "batch": engine.max_batch_size,
                "prompts": len(prompts),
                "prompts_s": len(prompts) / t,
                "seconds": t,
                "peak_gib": peak,
            }

        return run

    score_bs = 32 if not args.tiny else 4
    bench.case(
        "label scoring", scoring(engine_for(model, tok, "deepspeed", "static", args, score_bs), "static (before)")
    )
    report(bench, args, n_params, weight_gib)
    return 0


def structured_output(bench: Bench, engine: Engine, batches: list[int]):
    """Tokens/s decoding under a JSON schema against the same prompts free, each free request held to its
    constrained twin's token count (ignore_eos): the cost of the per-step bitmasks (host) and masked logits."""
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "summary": {"type": "string", "maxLength": 48},
            "score": {"type": "integer"},
        },
        "required": ["sentiment", "summary", "score"],
        "additionalProperties": False,
    }
    fmt = response_format_of({"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}})
    for b in batches:
        prompts = [random_text(bench.rng, 256 if engine.device.type == "cuda" else 16) for _ in range(b)]
        reqs = [
            GenerationRequest(p, SamplingParams(max_tokens=96, temperature=0.0, response_format=fmt)) for p in prompts
        ]
        t_json, out, peak = timed(lambda r=reqs: engine.generate(r), bench.args.repeats)
        counts = [o.completion_tokens for o in out]
        free = [
            GenerationRequest(p, SamplingParams(max_tokens=c, temperature=0.0, ignore_eos=True))
            for p, c in zip(prompts, counts, strict=True)
        ]
        t_free, _, _ = timed(lambda r=free: engine.generate(r), bench.args.repeats)
        toks = sum(counts)
        for label, t in (("free, same tokens", t_free), ("json_schema", t_json)):
            yield {"backend": label, "batch": b, "tokens": toks, "tok_s": toks / t, "seconds": t, "peak_gib": peak}
        yield {"metric": f"structured output: constrained / free tokens/s, batch {b}", "value": t_free / t_json}


def concurrent_streams(bench: Bench, engine: Engine, n: int):
    """Time per output token of each stream while ``n`` decode together (prompt 512): the step time, p50/p90."""
    loop = engine.loop()
    prompt = 512 if not bench.args.tiny else 16
    seqs = [engine.prepare(r) for r in bench.gen_requests(n, prompt, 64)]
    for s in seqs:
        loop.add(s)
    while loop.scheduler.waiting or any(r.prefilling for r in loop.scheduler.running):
        loop.step()
    times = []
    while loop.has_work():
        t0 = time.perf_counter()
        loop.step()
        times.append(time.perf_counter() - t0)
    times = sorted(times[:-1] or times)
    yield {"metric": f"{n} streams: p50 time per output token (ms)", "value": 1000 * times[len(times) // 2]}
    yield {"metric": f"{n} streams: p90 time per output token (ms)", "value": 1000 * times[int(len(times) * 0.9)]}


LABELS = ["t501", "t502 t503", "t504 t505 t506"]


def scoring_continuous(bench: Bench, engine: Engine, shared: int):
    """Label scoring in one pass per prompt (tree mask); with ``shared`` > 0 every prompt starts with the same
    ``shared`` tokens (an instruction), computed once through the prefix cache (cleared before each run)."""
    args = bench.args
    head = random_text(bench.rng, shared) + " " if shared else ""
    prompts = [head + random_text(bench.rng, args.score_len - shared) for _ in range(args.score_prompts)]
    cache = engine.loop().prefix_cache

    def run():
        cache.clear()
        return engine.score_labels(prompts, LABELS)

    t, _, peak = timed(run, args.repeats)
    label = "continuous, one pass" + (f", {shared}-token shared prefix" if shared else "")
    yield {
        "backend": label,
        "batch": "-",
        "prompts": len(prompts),
        "prompts_s": len(prompts) / t,
        "seconds": t,
        "peak_gib": peak,
    }


def step_breakdown(bench: Bench, engine: Engine, sizes: list[int]):
    """A decode step's wall time (schedule, inputs, graph replay, sampling, the token copy, bookkeeping) against
    the captured graph's replay alone: what the host adds per step."""
    loop = engine.loop()
    for rows in sizes:
        seqs = [engine.prepare(r) for r in bench.gen_requests(rows, 128 if not bench.args.tiny else 16, 48)]
        for s in seqs:
            loop.add(s)
        while loop.scheduler.waiting or any(r.prefilling for r in loop.scheduler.running):
            loop.step()
        steps = []
        for _ in range(20):
            t0 = time.perf_counter()
            loop.step()
            steps.append(time.perf_counter() - t0)
        replays = []
        cap = loop.graphs.last if loop.graphs is not None else None
        if cap is not None:
            for _ in range(20):
                sync()
                t0 = time.perf_counter()
                cap.graph.replay()
                sync()
                replays.append(time.perf_counter() - t0)
        for s in seqs:
            s.cancel()
        while loop.has_work():
            loop.step()
        yield {"metric": f"decode step, batch {rows}: whole step (ms)", "value": 1000 * statistics.median(steps)}
        if replays:
            yield {
                "metric": f"decode step, batch {rows}: graph replay alone (ms)",
                "value": 1000 * statistics.median(replays),
            }


def agreement_with_hf(bench: Bench, engine: Engine, model):
    """Logits of the paged runner vs the HF model's own forward on one prompt, and greedy tokens vs HF eager."""
    from phifleet.engine.model_runner import PrefillChunk, StepBatch

    dev = engine.device
    loop = engine.loop()
    ids = engine.encode(random_text(bench.rng, 64))
    blocks = loop.pool.allocate(loop.pool.blocks_for(len(ids)))
    try:
        ctx = loop._slots_of(blocks, len(ids)).to(dev)
        batch = StepBatch(
            input_ids=torch.tensor(ids, device=dev),
            positions=torch.arange(len(ids), device=dev),
            slots=ctx,
            num_decode=0,
            block_tables=torch.zeros((0, 1), dtype=torch.int32, device=dev),
            context_lens=torch.zeros(0, dtype=torch.int32, device=dev),
            prefills=[PrefillChunk(0, len(ids), 0, ctx)],
        )
        ours = loop.runner.forward(batch).float()
    finally:
        loop.pool.release(blocks)
    with torch.inference_mode():
        theirs = model(input_ids=torch.tensor([ids], device=dev)).logits[0].float()
    yield {"metric": "max |logits paged runner - hf| (64-token prefill)", "value": float((ours - theirs).abs().max())}
    yield {
        "metric": "argmax agreement, paged runner vs hf (64 positions)",
        "value": float((ours.argmax(-1) == theirs.argmax(-1)).float().mean()),
    }
    n, steps = 4, 32
    reqs = bench.gen_requests(n, 128 if not bench.args.tiny else 16, steps)
    got = engine.generate(reqs)
    same, prefix, agree, gaps = 0, [], 0, []
    for req, out in zip(reqs, got, strict=True):
        p = engine.encode(req.prompt_text)
        with torch.inference_mode():
            ref = model.generate(
                torch.tensor([p], device=dev),
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )[0, len(p) :].tolist()
        same += list(out.token_ids) == ref
        prefix.append(next((i for i, (a, b) in enumerate(zip(out.token_ids, ref, strict=False)) if a != b), steps))
        # Our own greedy path, teacher-forced through HF: is each of our tokens HF's argmax there, and where it is
        # not, how far below HF's top logit is it (a near tie broken the other way by rounding, or a real error)?
        with torch.inference_mode():
            full = torch.tensor([p + list(out.token_ids)], device=dev)
            hf_logits = model(input_ids=full).logits[0, len(p) - 1 : -1].float()
        ours = torch.tensor(out.token_ids, device=dev)
        agree += int((hf_logits.argmax(-1) == ours).sum())
        gaps.append(float((hf_logits.max(-1).values - hf_logits.gather(1, ours[:, None])[:, 0]).max()))
    yield {"metric": f"greedy outputs identical to HF eager (of {n}, {steps} tokens)", "value": same}
    yield {"metric": "greedy: mean tokens before first divergence from HF eager", "value": sum(prefix) / n}
    yield {"metric": f"our greedy tokens that are HF's argmax on our own path (of {n * steps})", "value": agree}
    yield {"metric": "largest HF logit gap below HF's top at our token (teacher-forced)", "value": max(gaps)}


def decode_kernel(args, error_out: list[float]):
    """The Triton paged-decode kernel against the torch reference (max error), and its achieved bandwidth."""
    if args.tiny:
        return
    from phifleet.engine.kernels.paged_decode import (
        paged_decode_attention_reference,
        paged_decode_attention_triton,
    )

    torch.manual_seed(0)
    b, kvh, g, d, bs, ctx = 128, 10, 4, 128, 16, 640
    blocks_per = ctx // bs
    k = torch.randn(b * blocks_per + 1, bs, kvh, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    tables = (torch.randperm(b * blocks_per, device="cuda") + 1).view(b, blocks_per).int()
    lens = torch.randint(ctx // 2, ctx + 1, (b,), device="cuda", dtype=torch.int32)
    q = torch.randn(b, kvh * g, d, device="cuda", dtype=torch.bfloat16)
    scale = d**-0.5
    ref = paged_decode_attention_reference(q, k, v, tables, lens, scale)
    out = paged_decode_attention_triton(q, k, v, tables, lens, scale)
    error_out.append(float((out.float() - ref.float()).abs().max()))
    yield {
        "metric": "triton paged decode: max |triton - reference| (bf16)",
        "value": float((out.float() - ref.float()).abs().max()),
    }
    nbytes = int(lens.sum()) * kvh * d * 2 * 2
    for name, fn in (("triton", paged_decode_attention_triton), ("torch reference", paged_decode_attention_reference)):
        t, _, _ = timed(lambda f=fn: f(q, k, v, tables, lens, scale), 20)
        yield {
            "metric": f"paged decode {name}: GB/s of K/V read (batch 128, 320-640 tokens)",
            "value": nbytes / t / 1e9,
        }
        yield {"metric": f"paged decode {name}: us per call (one layer)", "value": t * 1e6}


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
    """DeepSpeed FastGen at Phi-4's layer shapes (few layers), in a subprocess with a hard timeout."""
    import subprocess

    out = bench.args.out / ("fastgen_tiny.json" if bench.args.tiny else "fastgen.json")
    cmd = [sys.executable, str(Path(__file__).with_name("fastgen_probe.py")), "--out", str(out)]
    if bench.args.tiny:
        cmd.append("--tiny")
    timeout = bench.args.fastgen_timeout_s
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)
    except subprocess.TimeoutExpired as exc:
        bench.notes.append(f"fastgen probe: killed after {timeout:.0f}s (its JSON keeps the stages it finished)")
        print((exc.stdout or b"")[-3000:], flush=True)
    if not out.exists():
        bench.notes.append("fastgen probe: wrote no JSON")
        return
    result = json.loads(out.read_text())
    for name, stage in result.get("stages", {}).items():
        if isinstance(stage, dict):
            if "seconds" in stage:
                yield {"metric": f"fastgen stage {name}: seconds", "value": stage["seconds"]}
            if stage.get("error"):
                bench.notes.append(f"fastgen {name}: {str(stage['error'])[:300]}")
    for key, value in result.get("results", {}).items():
        if isinstance(value, int | float):
            yield {"metric": f"fastgen {key}", "value": value}


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


def render_fastgen(probes: list[dict]) -> list[str]:
    """The FastGen probe's own JSON (bench/gpu/fastgen_probe.py), as a section."""
    lines = ["", "## DeepSpeed FastGen (inference v2) probe", ""]
    for probe in probes:
        res = probe.get("results", {})
        stages = probe.get("stages", {})
        env = probe.get("env", {})
        lines.append(
            f"- {env.get('device', '?')}, deepspeed {env.get('deepspeed', '?')}, TORCH_CUDA_ARCH_LIST "
            f"{env.get('torch_cuda_arch_list', '?')}: stages "
            + ", ".join(f"{k} {v.get('status', '?')}" for k, v in stages.items() if isinstance(v, dict))
        )
        for case, name in (("decode_single", "single-stream decode"), ("decode_batch32", "decode at batch 32")):
            if f"{case}_extrapolated_40_layers_ms_per_step" in res:
                lines.append(
                    f"- {name}: {res[f'{case}_measured_4_layers_ms_per_step']:.2f} ms/step measured at 4 layers; "
                    f"extrapolated to 40 layers {res[f'{case}_extrapolated_40_layers_ms_per_step']:.1f} ms/step, "
                    f"{res[f'{case}_extrapolated_40_layers_tok_s']:.0f} tok/s (an estimate: the layer stack x10)"
                )
        jit = [f"{k[4:-2]} {v:.0f} s" for k, v in res.items() if k.startswith("jit_") and k.endswith("_s")]
        if jit:
            lines.append(f"- first-use JIT builds (in parallel): {', '.join(jit)}")
        for name, patch in probe.get("patches", {}).items():
            if isinstance(patch, dict) and patch.get("applied"):
                lines.append(f"- patched {name}: {str(patch.get('reason', ''))[:240]}")
    return lines


def render(records: list[dict]) -> str:
    """Markdown for one or more runs on the same card (later runs add rows and metrics); FastGen probe JSON files
    among them become their own section."""
    probes = [r for r in records if "probe" in r]
    records = [r for r in records if "probe" not in r]
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
    lines += ["", *[f"- note: {n}" for n in dict.fromkeys(" ".join(n.split())[:300] for n in notes)]]
    if probes:
        lines += render_fastgen(probes)
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
