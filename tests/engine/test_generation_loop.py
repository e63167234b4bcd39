"""The continuous-batching loop against plain transformers and against itself under pressure.

Reference outputs come from Hugging Face's own eager ``generate`` on the same weights (fp32, greedy), so a
token that differs is a bug in the paged attention, the rotary positions, the chunking or the scheduler.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from phifleet.engine import GenerationRequest, SamplingParams
from phifleet.engine.generation_loop import GenerationLoop, LoopConfig
from phifleet.engine.sequence import Sequence
from tests.engine.test_generation import PROMPTS


@pytest.fixture(scope="module")
def model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None
        )
    return out[0, len(ids) :].tolist()


def make_loop(model, **kw) -> GenerationLoop:
    cfg = dict(kv_tokens=4096, max_num_seqs=8, max_step_tokens=16, max_model_len=2048, block_size=4)
    cfg.update(kw)
    return GenerationLoop(model, LoopConfig(**cfg), torch.device("cpu"))


def held_by_requests(loop: GenerationLoop) -> int:
    """Blocks in use but for those only the prefix cache holds (kept for later requests, evicted on demand)."""
    cached = loop.prefix_cache
    return loop.pool.used_blocks - (0 if cached is None else cached.evictable())


def seq_of(engine, prompt: str, n: int, **params) -> Sequence:
    return engine.prepare(
        GenerationRequest(prompt, SamplingParams(max_tokens=n, ignore_eos=True, **{"temperature": 0.0, **params}))
    )


def run_all(loop: GenerationLoop, seqs: list[Sequence]) -> list[list[int]]:
    for _ in loop.steps(seqs):
        pass
    return [s.token_ids for s in seqs]


def test_greedy_tokens_equal_hugging_face_eager(model, engine):
    """Prompts longer than a step's token budget are prefilled in chunks across block boundaries (block size 4)."""
    seqs = [seq_of(engine, p, 10 + i) for i, p in enumerate(PROMPTS)]
    assert max(len(s.prompt_ids) for s in seqs) > 2 * 16  # at least one prompt needs several chunks
    got = run_all(make_loop(model), seqs)
    want = [hf_greedy(model, s.prompt_ids, 10 + i) for i, s in enumerate(seqs)]
    assert got == want
    assert all(s.finish_reason == "length" for s in seqs)


def test_kv_blocks_all_return_and_preemption_recomputes_exactly(model, engine):
    """A pool too small for all requests at once: decodes preempt the newest request, which recomputes later."""
    seqs = [seq_of(engine, p, 40) for p in PROMPTS]
    roomy = run_all(make_loop(model), [seq_of(engine, p, 40) for p in PROMPTS])
    need = max(len(s.prompt_ids) for s in seqs) + 40
    loop = make_loop(model, kv_tokens=need + 24)
    got = run_all(loop, seqs)
    assert loop.scheduler.preemptions > 0
    assert got == roomy
    assert held_by_requests(loop) == 0 and not loop.has_work()


def test_a_request_that_arrives_mid_generation_joins_at_the_next_step(model, engine):
    loop = make_loop(model)
    long = seq_of(engine, PROMPTS[0], 60)
    late = seq_of(engine, PROMPTS[3], 6)
    loop.add(long)
    for _ in range(10):
        loop.step()
    loop.add(late)
    steps_until_late_done = 0
    while not late.finished:
        loop.step()
        steps_until_late_done += 1
    assert not long.finished  # it kept decoding beside the newcomer
    # Its prompt is prefilled in chunks of what the step budget (16) leaves beside the one decode, the last
    # chunk samples its first token, and each further step adds one.
    chunks = -(-len(late.prompt_ids) // (16 - 1))
    assert steps_until_late_done == chunks + 5
    alone = run_all(make_loop(model), [seq_of(engine, PROMPTS[3], 6)])[0]
    assert late.token_ids == alone
    while loop.has_work():
        loop.step()
    assert held_by_requests(loop) == 0


def test_cancelled_requests_free_their_blocks_at_the_next_step(model, engine):
    loop = make_loop(model)
    seqs = [seq_of(engine, p, 50) for p in PROMPTS[:3]]
    for s in seqs:
        loop.add(s)
    loop.step()
    loop.step()
    used = held_by_requests(loop)
    seqs[1].cancel()
    loop.step()
    assert held_by_requests(loop) < used
    assert len(loop.scheduler.running) == 2


def test_too_long_for_the_pool_fails_that_request_alone(model, engine):
    loop = make_loop(model, kv_tokens=64)
    big = seq_of(engine, PROMPTS[0], 200)
    small = seq_of(engine, PROMPTS[4], 4)
    run_all(loop, [big, small])
    assert big.error is not None and "KV blocks" in str(big.error)
    assert small.finish_reason == "length" and len(small.token_ids) == 4


def test_longer_than_the_context_window_fails_that_request_alone(model, engine):
    """The pool could hold it, the model's context cannot: refused at the loop too, not only by the validator."""
    loop = make_loop(model, max_model_len=64)
    big = seq_of(engine, PROMPTS[0], 200)
    small = seq_of(engine, PROMPTS[4], 4)
    run_all(loop, [big, small])
    assert big.error is not None and "context window of 64 tokens" in str(big.error)
    assert small.finish_reason == "length" and len(small.token_ids) == 4


def test_seeded_sampling_is_the_same_whatever_else_is_in_the_batch(model, engine):
    params = dict(temperature=0.9, top_p=0.9, top_k=50, seed=1234)
    alone = run_all(make_loop(model), [seq_of(engine, PROMPTS[1], 16, **params)])[0]
    crowd = [seq_of(engine, p, 16, temperature=1.0) for p in PROMPTS] + [seq_of(engine, PROMPTS[1], 16, **params)]
    assert run_all(make_loop(model), crowd)[-1] == alone
    other_seed = run_all(make_loop(model), [seq_of(engine, PROMPTS[1], 16, **{**params, "seed": 99})])[0]
    assert other_seed != alone


def test_a_decode_step_copies_to_the_host_once(model, engine, monkeypatch):
    """Sampled rows with mixed knobs: the step's only device-to-host transfer is the token ids."""
    loop = make_loop(model)
    knobs = [dict(temperature=0.0), dict(temperature=0.7, top_p=0.8), dict(temperature=1.2, top_k=5, seed=3)]
    for p, k in zip(PROMPTS, knobs, strict=False):
        loop.add(seq_of(engine, p, 20, **k))
    while loop.scheduler.waiting or any(r.prefilling for r in loop.scheduler.running):
        loop.step()
    calls: list[str] = []
    for name in ("tolist", "item", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    loop.step()
    monkeypatch.undo()
    assert calls == ["tolist"]


def test_the_kv_sizing_reserves_every_captured_graphs_logits():
    """Each (batch bucket, width) key DecodeGraphs can capture keeps a [rows, vocab] logits tensor alive."""
    from phifleet.engine.cuda_graphs import BATCH_BUCKETS, block_bucket, bucket, kept_bytes

    max_rows, max_blocks, vocab = 40, 100, 7
    buckets = (*(b for b in BATCH_BUCKETS if b < max_rows), max_rows)
    keys = {(bucket(r, buckets), block_bucket(w)) for r in range(1, max_rows + 1) for w in range(1, max_blocks + 1)}
    assert kept_bytes(max_rows, max_blocks, vocab, 2) == sum(rows for rows, _ in keys) * vocab * 2
