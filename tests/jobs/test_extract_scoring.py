"""Extract's enum/boolean fields scored for a whole block in one engine call (no Ray): the same values and
log-probabilities as one scoring pass per field per row, in fewer forward passes; a row whose scoring fails is that
row's error."""

from __future__ import annotations

from typing import Any

import pytest

from phifleet.engine.tiny.build import review_schema
from phifleet.jobs.config import ExtractTask, InputConfig, JobConfig, OutputConfig
from phifleet.jobs.kinds.extract import ExtractKind
from tests.jobs.conftest import REVIEWS, read_jsonl

ROWS = 6


class Scoring:
    """The engine, counting its scoring calls and their forward passes; ``per_field`` scores as extract did before
    (``score_continuations``, one pass per field per row); ``fail`` makes the scoring calls so numbered raise."""

    def __init__(self, engine, passes: dict[str, int], per_field: bool = False, fail: tuple[int, ...] = ()) -> None:
        self.engine, self.passes, self.per_field, self.fail = engine, passes, per_field, fail
        self.calls = 0
        self.scoring_passes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def score_continuations_each(self, items):
        self.calls += 1
        if self.calls in self.fail:
            raise RuntimeError("device fell over")
        before = self.passes["n"]
        try:
            if self.per_field:
                return [self.engine.score_continuations(p, o) for p, o in items]
            return self.engine.score_continuations_each(items)
        finally:
            self.scoring_passes += self.passes["n"] - before


@pytest.fixture
def kind() -> ExtractKind:
    schema = review_schema(["sentiment", "product"], ["positive", "negative", "neutral"])
    schema["properties"]["recommended"] = {"type": "boolean"}  # two scored fields per row
    schema["required"].append("recommended")
    task = ExtractTask(schema=schema)
    return ExtractKind(JobConfig(input=InputConfig(path="x"), output=OutputConfig(path="y"), task=task), "m")


@pytest.fixture
def passes(engine, monkeypatch) -> dict[str, int]:
    runner, calls = engine.loop().runner, {"n": 0}
    real = runner.forward

    def forward(batch):
        calls["n"] += 1
        return real(batch)

    monkeypatch.setattr(runner, "forward", forward)
    return calls


def run(kind: ExtractKind, engine: Scoring) -> list:
    engine.loop().prefix_cache.clear()  # both paths start from the same cold cache
    rows = [kind.prepare(r, r["id"], engine.validator) for r in read_jsonl(REVIEWS)[:ROWS]]
    return kind.run(engine, rows)


def test_one_scoring_call_per_block_equals_one_pass_per_field(kind, engine, passes):
    per_field = Scoring(engine, passes, per_field=True)
    want = run(kind, per_field)
    batched = Scoring(engine, passes)
    got = run(kind, batched)
    assert batched.calls == 1 and per_field.scoring_passes == 2 * ROWS  # every row has both fields
    assert batched.scoring_passes < per_field.scoring_passes, (batched.scoring_passes, per_field.scoring_passes)
    for g, w in zip(got, want, strict=True):
        assert not isinstance(g, Exception) and not isinstance(w, Exception), (g, w)
        assert g["object"] == w["object"] and set(g["logprobs"]) == {"sentiment", "recommended"}
        for name, values in w["logprobs"].items():
            assert g["logprobs"][name].keys() == values.keys()
            assert all(abs(g["logprobs"][name][v] - lp) < 1e-5 for v, lp in values.items()), (name, g, w)
            assert abs(g["probability"][name] - w["probability"][name]) < 1e-5


def test_a_row_whose_scoring_fails_is_that_rows_error_not_the_blocks(kind, engine, passes):
    want = run(kind, Scoring(engine, passes))
    flaky = Scoring(engine, passes, fail=(1, 3))  # the block's call fails as a whole, then row 1 alone fails again
    got = run(kind, flaky)
    assert flaky.calls == 1 + ROWS  # the block's call, then each row's fields in one call of its own
    assert isinstance(got[1], RuntimeError) and "fell over" in str(got[1])
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if i != 1:
            assert g["object"] == w["object"]
            assert all(abs(g["logprobs"]["sentiment"][k] - v) < 1e-5 for k, v in w["logprobs"]["sentiment"].items())


def test_a_field_the_engine_refuses_to_score_names_the_field_in_its_rows_error(kind, engine, passes):
    """The engine answers a bad item with its own InvalidRequestError (tests/engine/test_scoring_each.py), whose
    param indexes the block's flat list of fields; the row's error names the schema field instead."""
    from phifleet.engine.errors import InvalidRequestError
    from phifleet.jobs.rows import RowError

    class Refusing(Scoring):
        def score_continuations_each(self, items):
            out = super().score_continuations_each(items)
            out[3] = InvalidRequestError("the prompt exceeds the context window", param="items[3].prompt")
            return out

    got = run(kind, Refusing(engine, passes))
    assert isinstance(got[1], RowError) and got[1].param == "recommended"  # row 1's second field is item 3
    assert "field 'recommended' could not be scored: the prompt exceeds" in str(got[1])
    assert all(not isinstance(g, Exception) for i, g in enumerate(got) if i != 1)
