"""Generation on the tiny model: batching modes agree, limits and stop strings hold, seeds reproduce.

No test depends on what the model happens to say: comparisons are between two ways of generating the same
thing, lengths come from ``ignore_eos``, and the few answers checked are what it was trained to give
(a label for a trained classification prompt; a review of several words for "Write a ... review").
"""

import pytest

from phifleet.engine import GenerationRequest, SamplingParams
from phifleet.engine.chat_template import render_chat


def chat(text: str) -> str:
    return render_chat([{"role": "user", "content": text}])


PROMPTS = [
    chat("Write a positive review of a blender."),
    chat("Write a negative review of a lamp."),
    chat("Write a neutral review of a tent."),
    render_chat(
        [
            {
                "role": "system",
                "content": "Classify the text as one of: positive, negative, neutral. Answer with the label only.",
            },
            {"role": "user", "content": "The kettle is awful."},
        ]
    ),
    "Once upon a time",  # a raw completion prompt, longer padding for the others
]


def greedy(max_tokens: int = 24, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw)


def test_batched_equals_one_by_one_greedy(engine):
    """Every other request runs to max_tokens, so the batch holds sequences that stop at different steps."""
    requests = [
        GenerationRequest(p, greedy(max_tokens=8 + 4 * i, ignore_eos=i % 2 == 0)) for i, p in enumerate(PROMPTS)
    ]
    batched = engine.generate(requests)
    single = [engine.generate([r])[0] for r in requests]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    assert [b.text for b in batched] == [s.text for s in single]
    assert [b.completion_tokens for b in batched[::2]] == [8, 16, 24]


def test_static_equals_continuous_greedy(static_engine, continuous_engine):
    assert continuous_engine.batching == "continuous" and static_engine.batching == "static"
    requests = [GenerationRequest(p, greedy(max_tokens=12)) for p in PROMPTS]
    static = static_engine.generate(requests)
    cont = continuous_engine.generate(requests)
    assert [s.token_ids for s in static] == [c.token_ids for c in cont]
    assert [s.finish_reason for s in static] == [c.finish_reason for c in cont]


def test_continuous_stream_matches_generate(continuous_engine):
    request = GenerationRequest(PROMPTS[0], greedy())
    deltas = list(continuous_engine.stream(request))
    assert "".join(d.text for d in deltas) == continuous_engine.generate([request])[0].text


def test_trained_model_answers_the_label(engine):
    """A prompt from the training templates: the answer is its label, then <|im_end|>."""
    out = engine.generate([GenerationRequest(PROMPTS[3], greedy())])[0]
    assert out.text == "negative"
    assert out.finish_reason == "stop"  # ended at <|im_end|>


def test_max_tokens_gives_length(engine):
    """Asked to write a review (trained answers run longer than 3 tokens), it is cut at max_tokens."""
    out = engine.generate([GenerationRequest(PROMPTS[0], greedy(max_tokens=3))])[0]
    assert out.finish_reason == "length"
    assert out.completion_tokens == 3
    assert len(out.token_ids) == 3


def test_usage_counts_match_tokenizer(engine):
    out = engine.generate([GenerationRequest(PROMPTS[0], greedy())])[0]
    assert out.prompt_tokens == len(engine.tokenizer.encode(PROMPTS[0], add_special_tokens=False))
    assert out.completion_tokens == len(out.token_ids)


def test_stop_string_truncates_and_finishes(engine):
    full = engine.generate([GenerationRequest(PROMPTS[0], greedy(ignore_eos=True))])[0].text
    words = full.split(" ")
    assert len(words) >= 3, full
    stop = " " + words[2]
    out = engine.generate([GenerationRequest(PROMPTS[0], greedy(stop=(stop,), ignore_eos=True))])[0]
    assert out.text == full[: full.index(stop)]
    assert out.finish_reason == "stop"
    assert stop not in out.text


def test_stream_matches_generate_and_withholds_stop_prefix(engine):
    full = engine.generate([GenerationRequest(PROMPTS[0], greedy(ignore_eos=True))])[0].text
    stop = full.split(" ")[2]
    request = GenerationRequest(PROMPTS[0], greedy(stop=(" " + stop,), ignore_eos=True))
    deltas = list(engine.stream(request))
    assert "".join(d.text for d in deltas) == engine.generate([request])[0].text
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason == "stop" and last.completion_tokens > 0 and last.prompt_tokens > 0


def test_closing_a_stream_early_stops_generation(engine):
    stream = engine.stream(GenerationRequest(PROMPTS[4], greedy(max_tokens=200, ignore_eos=True)))
    next(stream)
    stream.close()  # a client that went away: nothing else runs, and the engine stays usable
    assert engine.generate([GenerationRequest(PROMPTS[3], greedy())])[0].text == "negative"


def sampled(seed: int | None) -> SamplingParams:
    return SamplingParams(max_tokens=20, temperature=1.0, top_p=0.95, top_k=50, seed=seed, ignore_eos=True)


def test_seeded_sampling_is_reproducible_whatever_the_batch(engine):
    alone = engine.generate([GenerationRequest(PROMPTS[4], sampled(7))])[0]
    in_batch = engine.generate([GenerationRequest(PROMPTS[0], sampled(1)), GenerationRequest(PROMPTS[4], sampled(7))])[
        1
    ]
    assert alone.token_ids == in_batch.token_ids
    others = {engine.generate([GenerationRequest(PROMPTS[4], sampled(s))])[0].token_ids for s in range(8)}
    assert len(others) > 1  # different seeds do sample differently


@pytest.mark.parametrize("top_k", [1])
def test_top_k_one_is_greedy(engine, top_k):
    params = SamplingParams(max_tokens=16, temperature=1.3, top_k=top_k, seed=3)
    out = engine.generate([GenerationRequest(PROMPTS[1], params)])[0]
    assert out.token_ids == engine.generate([GenerationRequest(PROMPTS[1], greedy(16))])[0].token_ids


def test_tiny_top_p_is_greedy(engine):
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=1e-6, seed=5)
    out = engine.generate([GenerationRequest(PROMPTS[2], params)])[0]
    assert out.token_ids == engine.generate([GenerationRequest(PROMPTS[2], greedy(16))])[0].token_ids


def test_continuous_sampling_respects_per_request_params(continuous_engine):
    """Unseeded sampled requests go through the CB sampler; top_k=1 there must still be greedy."""
    params = SamplingParams(max_tokens=12, temperature=0.9, top_k=1)
    out = continuous_engine.generate([GenerationRequest(PROMPTS[1], params)])[0]
    assert out.token_ids == continuous_engine.generate([GenerationRequest(PROMPTS[1], greedy(12))])[0].token_ids


@pytest.mark.slow  # a subprocess that loads torch and the engine
def test_continuous_batching_is_bounded_and_does_not_block_exit(tiny_dir):
    """transformers sizes its paged cache from free memory (system RAM on a CPU) and runs a non-daemon
    thread; the engine bounds the cache by max_batch_tokens and stops the thread at interpreter exit."""
    import subprocess
    import sys

    code = f"""
import resource
from phifleet.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
e = Engine(EngineConfig(model={str(tiny_dir)!r}, batching="continuous"))
r = e.generate([GenerationRequest({PROMPTS[0]!r}, SamplingParams(max_tokens=4, temperature=0))])
print(r[0].completion_tokens, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""  # no e.close(): the process must still exit
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tokens, max_rss_kib = map(int, proc.stdout.split())
    assert tokens == 4
    assert max_rss_kib < 3 * 1024 * 1024  # far below the GBs transformers would take from system RAM


def test_ignore_eos_generates_exactly_max_tokens(engine, continuous_engine):
    """The trained answer ends at <|im_end|> after a label; ignore_eos keeps going (vLLM's benchmark extension)."""
    assert engine.generate([GenerationRequest(PROMPTS[3], greedy(max_tokens=40))])[0].finish_reason == "stop"
    for eng in (engine, continuous_engine):
        out = eng.generate([GenerationRequest(PROMPTS[3], greedy(max_tokens=40, ignore_eos=True))])
        assert out[0].finish_reason == "length" and out[0].completion_tokens == 40


def test_stream_batch_streams_many_requests_as_one_batch(engine):
    prompts = [PROMPTS[3], PROMPTS[4], "x"]
    reqs = [GenerationRequest(p, greedy(max_tokens=12)) for p in prompts]
    reqs.insert(1, GenerationRequest("", greedy()))  # invalid: reported, the others still run
    texts: dict[int, str] = {}
    finals: dict[int, object] = {}
    errors: dict[int, Exception] = {}
    for i, item in engine.stream_batch(reqs):
        if isinstance(item, Exception):
            errors[i] = item
            continue
        assert i not in finals, "no delta after the final one"
        texts[i] = texts.get(i, "") + item.text
        if item.finish_reason:
            finals[i] = item
    assert list(errors) == [1] and errors[1].param == "prompt"
    expected = engine.generate([reqs[0], reqs[2], reqs[3]])
    for i, result in zip((0, 2, 3), expected, strict=True):
        assert texts[i] == result.text and finals[i].finish_reason == result.finish_reason
        assert finals[i].completion_tokens == result.completion_tokens


def test_stream_batch_cancels_one_request_and_keeps_the_others(engine):
    reqs = [GenerationRequest("x", greedy(max_tokens=n, ignore_eos=True)) for n in (200, 40)]
    counts = {0: 0, 1: 0}
    finished = set()
    for i, delta in engine.stream_batch(reqs, cancelled=lambda i: i == 0 and counts[0] >= 3):
        counts[i] += 1
        if delta.finish_reason:
            finished.add(i)
    assert counts[0] == 3 and finished == {1}  # request 0 stopped after 3 deltas; request 1 ran to its end
