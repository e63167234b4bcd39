"""Label scoring: right on held-out reviews, equal to full-sequence scoring, cheaper than generating."""

import math

import pytest
import torch

from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.forward import pad
from phifleet.engine.prompts import classification_prompt
from phifleet.engine.tiny.corpus import LABELS, reviews


def test_held_out_accuracy_at_least_90_percent(engine):
    """Templates and products here never appeared in training (see engine.tiny.corpus)."""
    held = reviews(240, seed=4242, held_out=True)
    scores = engine.score_labels([classification_prompt(r.text, LABELS) for r in held], list(LABELS))
    accuracy = sum(s.label == r.label for s, r in zip(scores, held, strict=True)) / len(held)
    assert accuracy >= 0.9, accuracy


def test_label_order_in_the_instruction_does_not_matter_much(engine):
    held = reviews(60, seed=77, held_out=True)
    labels = ["neutral", "positive", "negative"]
    scores = engine.score_labels([classification_prompt(r.text, labels) for r in held], labels)
    assert sum(s.label == r.label for s, r in zip(scores, held, strict=True)) / len(held) >= 0.85


def naive_scores(engine, prompt: str, labels: list[str]) -> list[float]:
    """One full forward pass per (prompt, label) row: the reference the prefix-shared path must match."""
    out = []
    for ids in engine.label_token_ids(labels):
        prompt_ids = engine.encode(prompt)
        seq = torch.tensor([prompt_ids + ids])
        with torch.inference_mode():
            logp = torch.log_softmax(engine.model(input_ids=seq).logits[0].float(), dim=-1)
        out.append(sum(logp[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(ids)))
    return out


def test_prefix_shared_scores_equal_full_sequence_scores(engine):
    labels = ["positive", "negative", "neutral", "not sure at all"]  # labels of different token lengths
    prompts = [classification_prompt(t, labels) for t in ("Great kettle!", "It broke on day one, what junk.")]
    scored = engine.score_labels(prompts, labels)
    for prompt, result in zip(prompts, scored, strict=True):
        expected = naive_scores(engine, prompt.text, labels)
        assert [result.logprobs[label] for label in labels] == pytest.approx(expected, abs=1e-4)
        for label, ids in zip(labels, engine.label_token_ids(labels), strict=True):
            assert result.normalized_logprobs[label] == pytest.approx(result.logprobs[label] / len(ids))
        assert result.label == max(result.logprobs, key=result.logprobs.get)
        assert math.isclose(sum(result.probabilities.values()), 1.0, rel_tol=1e-6)


def test_batching_does_not_change_scores(engine):
    texts = ["The lamp is okay.", "Terrible, it leaks and it is noisy and slow and ugly.", "Love it"]
    prompts = [classification_prompt(t, LABELS) for t in texts]
    together = engine.score_labels(prompts, list(LABELS))
    alone = [engine.score_labels([p], list(LABELS))[0] for p in prompts]
    for a, b in zip(together, alone, strict=True):
        assert a.label == b.label
        assert list(a.logprobs.values()) == pytest.approx(list(b.logprobs.values()), abs=1e-4)


def test_padding_masks_the_pad_side():
    ids, mask = pad([[5, 6, 7], [9]], pad_id=0, device=torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad([[5, 6, 7], [9]], pad_id=0, device=torch.device("cpu"), side="right")
    assert ids.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize(
    ("labels", "message"), [([], "at least one"), (["a", "a"], "unique"), (["a", " "], "non-empty")]
)
def test_bad_label_lists(engine, labels, message):
    with pytest.raises(InvalidRequestError, match=message) as err:
        engine.score_labels(["hello"], labels)
    assert err.value.param == "labels"
