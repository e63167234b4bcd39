"""Each prompt scored against its own options, many prompts to a pass (TreeScorer.score_each and
Engine.score_continuations_each, what extract scores its fields with): the log-probabilities of scoring each prompt
alone, in fewer forward passes, with every KV block returned."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.scoring import label_logprobs
from phifleet.engine.tree_scoring import TreeScorer
from tests.engine.test_prefix_and_scoring import loop_of, prompts_and_labels

# Options of different counts and lengths per prompt (1 to 8 tokens): the text around a value differs per row.
OPTIONS = [
    [" positive", " negative", " neutral"],
    ['"positive"}', '"negative"}', '"not sure at all"}'],
    [" true", " false,"],
    [' "neutral", ', " not sure at all maybe"],
    ["positive", " not sure at all", '"neutral"}', " false"],
]


@pytest.fixture(scope="module")
def model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def prompts_and_options(engine) -> tuple[list[list[int]], list[list[list[int]]]]:
    prompts, _ = prompts_and_labels(engine)
    options = [[engine.encode(o) for o in each] for each in OPTIONS]
    assert len({tuple(len(o) for o in each) for each in options}) == len(options)  # every prompt's branches differ
    return prompts, options


def counting(loop, monkeypatch) -> dict[str, int]:
    """Count the runner's forward passes from now on."""
    real, calls = loop.runner.forward, {"n": 0}

    def forward(batch):
        calls["n"] += 1
        return real(batch)

    monkeypatch.setattr(loop.runner, "forward", forward)
    return calls


@pytest.mark.parametrize(
    ("caching", "budget"),
    [(False, 2048), (True, 2048), (True, 64), (False, 80)],  # 64/80: groups split, prompts prefilled ahead
)
def test_own_options_in_one_call_equal_scoring_each_prompt_alone(model, engine, monkeypatch, caching, budget):
    prompts, options = prompts_and_options(engine)
    pairs = list(zip(prompts, options, strict=True))
    with torch.inference_mode():  # the reference: HF, the KV copied per label, one prompt at a time
        want = [label_logprobs(model, [p], o, engine.pad_id, torch.device("cpu"))[0] for p, o in pairs]
    alone = loop_of(model, prefix_caching=caching, max_step_tokens=budget)
    per_prompt = [alone.score([p], o)[0] for p, o in pairs]  # one pass per prompt: extract's per-field path
    loop = loop_of(model, prefix_caching=caching, max_step_tokens=budget)
    passes = counting(loop, monkeypatch)
    got = TreeScorer(loop).score_each(prompts, options)
    for g, a, w in zip(got, per_prompt, want, strict=True):
        assert len(g) == len(w)
        assert torch.allclose(torch.tensor(g), w, atol=1e-5), (g, w)
        assert torch.allclose(torch.tensor(g), torch.tensor(a), atol=1e-5), (g, a)
    if budget == 2048:  # everything fits one pass (after the first prompt alone, on a cold cache)
        assert passes["n"] == (2 if caching else 1) < len(prompts)
    assert loop.pool.used_blocks == (len(loop.prefix_cache) if caching else 0)  # only the cache holds blocks
    if caching:
        loop.prefix_cache.clear()
        assert loop.pool.used_blocks == 0


def test_shared_labels_score_as_before(model, engine):
    """``score`` is ``score_each`` with every prompt's labels the same."""
    prompts, labels = prompts_and_labels(engine)
    loop = loop_of(model, prefix_caching=False)
    assert TreeScorer(loop).score(prompts, labels) == TreeScorer(loop).score_each(prompts, [labels] * len(prompts))
    assert loop.pool.used_blocks == 0


@pytest.mark.parametrize("prefix_caching", [False, True])
def test_a_failing_pass_of_own_options_returns_every_block(model, engine, monkeypatch, prefix_caching):
    prompts, options = prompts_and_options(engine)
    loop = loop_of(model, max_step_tokens=80, prefix_caching=prefix_caching)
    real, calls = loop.runner.forward, {"n": 0}

    def forward(batch):
        calls["n"] += 1
        if calls["n"] == 2:  # the second group's pass (while a prompt waits outside it, without the cache)
            raise RuntimeError("device fell over")
        return real(batch)

    monkeypatch.setattr(loop.runner, "forward", forward)
    with pytest.raises(RuntimeError, match="fell over"):
        TreeScorer(loop).score_each(prompts, options)
    assert loop.pool.used_blocks == (len(loop.prefix_cache) if prefix_caching else 0)


def test_the_engine_scores_many_items_in_fewer_passes_and_a_bad_item_fails_alone(engine, monkeypatch):
    prompts, options = prompts_and_options(engine)
    items = list(zip(prompts, options, strict=True))
    bad = [(prompts[0], [[]]), ([], options[0]), (prompts[0], []), (prompts[0] * 40, options[0])]
    loop = engine.loop()
    loop.prefix_cache.clear()
    passes = counting(loop, monkeypatch)
    alone = [engine.score_continuations(p, o) for p, o in items]
    per_item = passes["n"]
    loop.prefix_cache.clear()
    passes["n"] = 0
    got = engine.score_continuations_each([*items[:2], *bad, *items[2:]])
    assert per_item == len(items) and passes["n"] < per_item
    errors = got[2 : 2 + len(bad)]
    assert all(isinstance(e, InvalidRequestError) for e in errors), errors
    assert [e.param for e in errors] == ["items[2].options", "items[3].prompt", "items[4].options", "items[5].prompt"]
    scored = got[:2] + got[2 + len(bad) :]
    for g, a in zip(scored, alone, strict=True):
        assert torch.allclose(torch.tensor(g), torch.tensor(a), atol=1e-5)
    assert loop.pool.used_blocks == len(loop.prefix_cache)
