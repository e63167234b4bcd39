"""The engine loop on its own thread, as servers use it: submissions join the running batch, failures stay contained."""

from __future__ import annotations

import queue
import threading

import pytest

from phifleet.engine import GenerationRequest, SamplingParams
from phifleet.engine.driver import EngineDriver
from tests.engine.test_generation import PROMPTS


@pytest.fixture
def driver(engine):
    d = EngineDriver(engine)
    yield d
    d.close()


def params(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **kw)


def collect(driver, engine, prompt: str, n: int, kind: str = "stream") -> queue.Queue:
    out: queue.Queue = queue.Queue()
    seq = engine.prepare(GenerationRequest(prompt, params(n)))
    driver.submit(seq, out.put, kind)
    out.seq = seq  # type: ignore[attr-defined]
    return out


def drain(q: queue.Queue, timeout: float = 60) -> list:
    items = []
    while True:
        item = q.get(timeout=timeout)
        items.append(item)
        if isinstance(item, BaseException) or item.finish_reason is not None:
            return items


def test_streams_from_many_threads_equal_one_by_one_generation(driver, engine):
    queues: list[queue.Queue] = [None] * len(PROMPTS)  # type: ignore[list-item]

    def submit(i: int) -> None:
        queues[i] = collect(driver, engine, PROMPTS[i], 6 + i)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = ["".join(d.text for d in drain(q)) for q in queues]
    alone = [engine.generate([GenerationRequest(p, params(6 + i))])[0].text for i, p in enumerate(PROMPTS)]
    assert texts == alone
    assert driver.stats.largest_kind_step["stream"] > 1  # they shared steps


def test_a_newcomer_starts_within_a_few_steps_of_a_long_generation(driver, engine):
    long = collect(driver, engine, PROMPTS[0], 400)
    first = long.get(timeout=60)  # the long one is decoding
    assert not isinstance(first, BaseException)
    steps_before = driver.stats.steps
    short = collect(driver, engine, PROMPTS[3], 3)
    deltas = drain(short)
    # Prefill of the short prompt (in chunks of the step budget) plus its 3 tokens; never the long one's 400.
    assert deltas[-1].completion_tokens == 3
    assert driver.stats.steps - steps_before < 12
    long.seq.cancel()


def test_calls_run_between_steps_and_errors_reach_the_caller(driver, engine):
    assert driver.call(lambda: engine.score_labels(["Great kettle."], ["positive", "negative"])).result(60)
    with pytest.raises(ZeroDivisionError):
        driver.call(lambda: 1 / 0).result(60)


def fail_next_forward(driver, monkeypatch) -> None:
    """The engine's next forward pass raises (a device fault); the ones after it run."""
    real = driver.loop.runner.forward
    broken = {"left": 1}

    def forward(batch):
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("device fell over")
        return real(batch)

    monkeypatch.setattr(driver.loop.runner, "forward", forward)


def test_a_failed_step_fails_its_requests_once_and_the_loop_goes_on(driver, engine, monkeypatch):
    fail_next_forward(driver, monkeypatch)
    doomed = collect(driver, engine, PROMPTS[1], 5)
    items = drain(doomed)
    assert len(items) == 1 and "device fell over" in str(items[0])
    later = drain(collect(driver, engine, PROMPTS[1], 5))
    assert later[-1].completion_tokens == 5
    assert driver.loop.pool.used_blocks == len(driver.loop.prefix_cache)  # nothing but cached prompt blocks


def test_a_failed_step_spares_the_requests_waiting_for_a_place(tiny_dir, monkeypatch):
    """One place in the batch: the request in it fails with the step, the one queued behind it then runs."""
    from phifleet.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(model=str(tiny_dir), max_batch_size=1))
    driver = EngineDriver(engine)
    try:
        fail_next_forward(driver, monkeypatch)
        gate = threading.Event()
        held = driver.call(gate.wait)  # both submissions reach the scheduler together, before any step
        first = collect(driver, engine, PROMPTS[1], 5)
        second = collect(driver, engine, PROMPTS[2], 5)
        gate.set()
        held.result(60)
        failed = drain(first)
        assert len(failed) == 1 and "device fell over" in str(failed[0])
        assert drain(second)[-1].completion_tokens == 5
        assert driver.stats.submitted["stream"] == 2
    finally:
        driver.close()
        engine.close()


def test_a_cancelled_request_stops_and_frees_its_blocks(driver, engine):
    q = collect(driver, engine, PROMPTS[2], 2000)
    q.get(timeout=60)
    q.seq.cancel()
    deadline = threading.Event()
    for _ in range(600):
        if not driver.loop.has_work():
            break
        deadline.wait(0.05)
    assert not driver.loop.has_work() and driver.loop.pool.used_blocks == len(driver.loop.prefix_cache)
    assert len(q.seq.token_ids) < 2000
