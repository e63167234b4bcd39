"""Prefix reuse and one-pass label scoring on the paged pool, against the paths they replace."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from phifleet.engine.chat_template import render_chat
from phifleet.engine.generation_loop import GenerationLoop, LoopConfig
from phifleet.engine.kv_pool import KVPool, KVShape
from phifleet.engine.prefix_cache import PrefixCache, block_names
from phifleet.engine.scheduler import Scheduler
from phifleet.engine.scoring import label_logprobs
from tests.engine.test_generation_loop import hf_greedy, run_all, seq_of

INSTRUCTION = (
    "Classify the review as one of: positive, negative, neutral. Answer with the label only. "
    "A positive review praises the product; a negative one complains; a neutral one does neither. "
)
TEXTS = ["The kettle is awful.", "I love this lamp, it is great.", "The tent is okay.", "Great blender!", "Meh."]
LABELS = ["positive", "negative", "neutral", "not sure at all"]
PROMPTS_LONG = "Write a long review of a blender, a kettle and a lamp, with details."


@pytest.fixture(scope="module")
def model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def loop_of(model, **kw) -> GenerationLoop:
    cfg = dict(kv_tokens=4096, max_num_seqs=8, max_step_tokens=64, max_model_len=2048, block_size=4)
    cfg.update(kw)
    return GenerationLoop(model, LoopConfig(**cfg), torch.device("cpu"))


def prompts_and_labels(engine) -> tuple[list[list[int]], list[list[int]]]:
    labels = engine.label_token_ids(LABELS)
    prompts = [
        engine.validator.label_prompt_ids(
            render_chat([{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": t}]), labels
        )
        for t in TEXTS
    ]
    return prompts, labels


def test_one_pass_scores_equal_the_per_label_kv_copy_path(model, engine):
    prompts, labels = prompts_and_labels(engine)
    assert max(len(label) for label in labels) > 1  # branches of several tokens, under the tree mask
    with torch.inference_mode():
        want = label_logprobs(model, prompts, labels, engine.pad_id, torch.device("cpu"))
    for prefix_caching in (False, True):
        got = torch.tensor(loop_of(model, prefix_caching=prefix_caching).score(prompts, labels))
        assert torch.allclose(got, want, atol=1e-5), (prefix_caching, (got - want).abs().max())


def test_a_shared_instruction_is_computed_once_and_reused(model, engine):
    prompts, labels = prompts_and_labels(engine)
    loop = loop_of(model)
    loop.score(prompts[:1], labels)
    cache = loop.prefix_cache
    before = cache.hits
    loop.score(prompts[1:], labels)
    shared = len(INSTRUCTION) // 8  # far below the instruction's token count: a loose floor
    assert (cache.hits - before) / len(prompts[1:]) >= shared // loop.pool.block_size
    assert loop.pool.used_blocks == len(cache)  # only the cache holds blocks between calls
    cache.clear()
    assert loop.pool.used_blocks == 0


def test_long_prompts_are_prefilled_in_chunks_before_their_branches(model, engine):
    prompts, labels = prompts_and_labels(engine)
    with torch.inference_mode():
        want = label_logprobs(model, prompts[:2], labels, engine.pad_id, torch.device("cpu"))
    got = torch.tensor(loop_of(model, max_step_tokens=20, prefix_caching=False).score(prompts[:2], labels))
    assert torch.allclose(got, want, atol=1e-5)


def test_generation_reusing_cached_prefix_blocks_matches_hugging_face(model, engine):
    system = render_chat([{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": "x"}])[:-30]
    loop = loop_of(model)
    first = seq_of(engine, system + " one", 8)
    run_all(loop, [first])
    later = [seq_of(engine, system + t, 8) for t in (" two", " three and four")]
    hits = loop.prefix_cache.hits
    got = run_all(loop, later)
    assert loop.prefix_cache.hits > hits
    assert got == [hf_greedy(model, s.prompt_ids, 8) for s in later]


def test_requests_arriving_together_compute_their_common_prefix_once(model, engine):
    """A wave with one system prompt: the first request computes it, the rest wait for it and share it."""
    system = render_chat([{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": "x"}])[:-30]
    seqs = [seq_of(engine, system + t, 6) for t in TEXTS]
    loop = loop_of(model, max_step_tokens=256)  # room for every prompt in one step: all would start together
    computed = {"tokens": 0}
    real = loop.runner.forward

    def forward(batch):
        computed["tokens"] += batch.input_ids.shape[0]
        return real(batch)

    loop.runner.forward = forward
    got = run_all(loop, seqs)
    shared_blocks = len(engine.encode(system)) // loop.pool.block_size - 1  # the last may tokenize differently
    assert loop.prefix_cache.hits >= (len(seqs) - 1) * shared_blocks
    prompts = sum(len(s.prompt_ids) for s in seqs)
    assert computed["tokens"] < prompts - (len(seqs) - 1) * shared_blocks * loop.pool.block_size + 6 * len(seqs)
    assert got == [hf_greedy(model, s.prompt_ids, 6) for s in seqs]


def test_cached_blocks_give_way_when_the_pool_is_full(model, engine):
    """A pool that fits about one request: every earlier prompt's cached blocks are evicted for the next."""
    loop = loop_of(model, kv_tokens=140)
    seqs = [
        seq_of(engine, render_chat([{"role": "user", "content": f"Write a review {i} of a lamp."}]), 40)
        for i in range(4)
    ]
    for s in seqs:
        run_all(loop, [s])
        assert s.finish_reason == "length"
    assert loop.pool.used_blocks == len(loop.prefix_cache)


def test_a_failing_scoring_pass_returns_every_block(model, engine, monkeypatch):
    prompts, labels = prompts_and_labels(engine)
    loop = loop_of(model, max_step_tokens=80, prefix_caching=False)
    real, calls = loop.runner.forward, {"n": 0}

    def forward(batch):
        calls["n"] += 1
        if calls["n"] == 2:  # the second group's pass, while a prompt waits outside it
            raise RuntimeError("device fell over")
        return real(batch)

    monkeypatch.setattr(loop.runner, "forward", forward)
    with pytest.raises(RuntimeError, match="fell over"):
        loop.score(prompts, labels)
    assert loop.pool.used_blocks == 0


def test_scoring_makes_room_by_preempting_generation_which_then_resumes(model, engine):
    """A pool held by running generations: scoring preempts them (recomputed later), it does not fail."""
    prompts, labels = prompts_and_labels(engine)
    texts = ("Once upon a time", "Hello there")

    def busy_loop(kv_tokens: int):
        loop = loop_of(model, kv_tokens=kv_tokens, prefix_caching=False)
        gens = [seq_of(engine, t, 30) for t in texts]
        for s in gens:
            loop.add(s)
        for _ in range(4):
            loop.step()
        return loop, gens

    probe, _ = busy_loop(4096)
    used = probe.pool.used_blocks
    need = probe.pool.blocks_for(len(prompts[0]) + sum(len(label) - 1 for label in labels))
    loop, gens = busy_loop((used + need - 2) * probe.pool.block_size)  # two blocks short of both
    scores = loop.score(prompts[:1], labels)
    assert len(scores[0]) == len(labels) and loop.scheduler.preemptions > 0
    while loop.has_work():
        loop.step()
    alone = run_all(loop_of(model, prefix_caching=False), [seq_of(engine, t, 30) for t in texts])
    assert [s.token_ids for s in gens] == alone


def test_a_request_that_can_never_be_admitted_fails_instead_of_waiting_forever(model, engine):
    loop = loop_of(model, kv_tokens=64, prefix_caching=False)
    held = loop.pool.allocate(loop.pool.free_blocks - 2)  # blocks held outside the scheduler (as by a leak)
    seq = seq_of(engine, PROMPTS_LONG, 4)
    loop.add(seq)
    for _ in range(3):
        loop.step()
    assert seq.error is not None and "KV blocks" in str(seq.error) and not loop.has_work()
    loop.pool.release(held)


def small_pool(blocks: int = 12) -> KVPool:
    return KVPool(KVShape(1, 1, 1, 2, blocks, torch.float32), torch.device("cpu"))


def cached_and_done(cache: PrefixCache, tokens: list[int]) -> None:
    """A request computed ``tokens``, cached its full blocks and finished: the cache alone holds them."""
    pool = cache.pool
    n = len(tokens) // pool.block_size
    blocks = pool.allocate(n)
    cache.insert(block_names(tokens, pool.block_size, n), blocks)
    pool.release(blocks)


def test_eviction_shortens_a_chain_from_its_end_so_what_stays_is_reachable():
    pool = small_pool()
    cache = PrefixCache(pool)
    tokens = list(range(8))  # four blocks of two
    cached_and_done(cache, tokens)
    blocks, _ = cache.match(tokens, 8)  # a hit touches the chain in order: its first block is the oldest
    pool.release(blocks)
    assert cache.evict(1) == 1
    blocks, _ = cache.match(tokens, 8)
    pool.release(blocks)
    assert len(blocks) == 3  # the leading three blocks still serve; the last one went
    assert pool.used_blocks == len(cache) == 3


def test_a_block_in_use_keeps_the_blocks_before_it_cached():
    pool = small_pool()
    cache = PrefixCache(pool)
    shared = [1, 2, 3, 4]
    cached_and_done(cache, [*shared, 5, 6])
    cached_and_done(cache, [*shared, 7, 8])
    held, _ = cache.match([*shared, 5, 6, 9], 6)  # a running request holds the first chain
    assert len(held) == 3
    assert cache.evictable() == 1  # only the other branch's own block
    assert cache.evict(10) == 1
    pool.release(held)
    assert cache.evictable() == len(cache) == 3
    cache.clear()
    assert pool.used_blocks == 0


def test_the_cache_is_left_alone_when_evicting_it_would_not_make_room():
    pool = small_pool()  # 11 usable blocks
    cache = PrefixCache(pool)
    scheduler = Scheduler(pool, 4, 64, 2048, prefix_cache=cache)
    cached_and_done(cache, list(range(8)))  # 4 cached blocks
    running = pool.allocate(5)  # a request's own blocks; 2 stay free
    assert not scheduler._make_room(7)  # 5 short, 4 evictable: the request waits, the cache stays
    assert len(cache) == 4
    assert scheduler._make_room(6) and len(cache) == 0
    pool.release(running)


def test_scoring_evicts_what_a_preempted_generation_leaves_cached(model, engine):
    """A pool all but full of one generation: preempting it leaves its prompt blocks to the cache alone, and the
    scorer evicts them too rather than failing with OutOfBlocks."""
    prompts, labels = prompts_and_labels(engine)
    need = -(-(len(prompts[0]) + sum(len(label) - 1 for label in labels)) // 4)
    loop = loop_of(model, kv_tokens=need * 4, max_step_tokens=256)
    words = "Once upon a time a lamp and a kettle argued about which of them was brighter in the morning light"
    gen = seq_of(engine, words, 3)
    while (need - 2) * 4 < len(gen.prompt_ids) + 1:  # the generation must fit the pool
        gen = seq_of(engine, " ".join(words.split()[:-3]), 3)
        words = " ".join(words.split()[:-3])
    loop.add(gen)
    loop.step()
    cached = len(loop.prefix_cache)
    assert cached >= 1 and need > loop.pool.capacity - cached  # preemption alone would not make the room
    scores = loop.score(prompts[:1], labels)
    assert len(scores[0]) == len(labels) and loop.scheduler.preemptions == 1
    while loop.has_work():
        loop.step()
    assert gen.finish_reason == "length" and len(gen.token_ids) == 3


def test_eviction_is_all_or_nothing_when_asked_and_stops_looking_once_it_has_found_enough():
    """The scheduler asks on every block a decode crosses, with the cache holding most of the pool: finding one
    victim must not walk the whole cache (it did: ~14 ms per decode step at 30K cached blocks, 0.7 ms after)."""
    pool = small_pool(blocks=400)
    cache = PrefixCache(pool)
    for start in range(0, 380, 4):
        cached_and_done(cache, [*range(1000 + start, 1004 + start), start, start + 1])  # chains of 3 blocks
    looked = {"n": 0}
    real = pool.refs

    def refs(block: int) -> int:
        looked["n"] += 1
        return real(block)

    pool.refs = refs
    assert cache.evict(2, exact=True) == 2
    assert looked["n"] <= 8  # two leaves and their parents, not the ~280 cached blocks
    held, _ = cache.match([*range(1100, 1104), 100, 101], 6)
    before = len(cache)
    assert cache.evict(len(cache), exact=True) == 0 and len(cache) == before  # held blocks pin their chain
    assert cache.evict(len(cache)) == before - len(held)
    pool.release(held)


def test_blocks_under_a_parent_the_cache_does_not_hold_are_not_cached():
    """A request that computed a block the cache already names with another block: its later blocks would hang
    under a name whose block is not theirs, reachable by no lookup."""
    pool = small_pool()
    cache = PrefixCache(pool)
    tokens = [1, 2, 3, 4, 5, 6]
    names = block_names(tokens, 2, 3)
    mine = pool.allocate(3)
    cache.insert(names[:1], [mine[0]])
    other = pool.allocate(3)  # the same tokens computed again by a request admitted beside the first
    cache.insert(names[:1], [other[0]])  # the name keeps its first block
    cache.insert(names[1:], other[1:], parent=block_names([9, 9], 2, 1)[0])  # a parent it never cached
    assert len(cache) == 1
    cache.insert(names[1:], mine[1:], parent=names[0])
    pool.release(mine + other)
    blocks, _ = cache.match(tokens, 6)
    assert blocks == mine
    pool.release(blocks)
