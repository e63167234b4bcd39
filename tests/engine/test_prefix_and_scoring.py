"""Prefix reuse and one-pass label scoring on the paged pool, against the paths they replace."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from phifleet.engine.chat_template import render_chat
from phifleet.engine.generation_loop import GenerationLoop, LoopConfig
from phifleet.engine.scoring import label_logprobs
from tests.engine.test_generation_loop import hf_greedy, run_all, seq_of

INSTRUCTION = (
    "Classify the review as one of: positive, negative, neutral. Answer with the label only. "
    "A positive review praises the product; a negative one complains; a neutral one does neither. "
)
TEXTS = ["The kettle is awful.", "I love this lamp, it is great.", "The tent is okay.", "Great blender!", "Meh."]
LABELS = ["positive", "negative", "neutral", "not sure at all"]


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
