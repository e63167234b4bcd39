"""The replica's batcher on a real event loop, with an engine stand-in whose batches take a known time.

The stand-in is the `run` callback the replica passes (the engine itself is exercised over HTTP in
test_openai_server.py); what is under test is which work lands in which batch, and when.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from phifleet.serve.batching import Batcher


class Item:
    def __init__(self, name: str, kind: str = "generate") -> None:
        self.name, self.kind = name, kind
        self.dropped = False
        self.done = asyncio.get_running_loop().create_future()


class Engine:
    """Records each batch; a batch takes ``seconds``."""

    def __init__(self, seconds: float = 0.05, fail_first: bool = False) -> None:
        self.seconds, self.fail_first = seconds, fail_first
        self.batches: list[tuple[str, list[str]]] = []

    async def run(self, kind: str, batch: list[Item]) -> None:
        self.batches.append((kind, [w.name for w in batch]))
        await asyncio.sleep(self.seconds)
        if self.fail_first and len(self.batches) == 1:
            raise RuntimeError("engine down")
        for w in batch:
            w.done.set_result(len(self.batches))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_work_arriving_during_a_batch_forms_one_next_batch():
    """@serve.batch cuts such arrivals into one small batch per timeout, each queued for the engine."""

    async def scenario() -> list:
        engine = Engine(seconds=0.1)
        b = Batcher(engine.run, max_batch_size=32, wait_s=0.005)
        first = Item("first")
        b.submit(first)
        await asyncio.sleep(0.01)  # the first batch is running
        late = []
        for i in range(10):  # trickling in, 5 ms apart: longer than wait_s between arrivals
            late.append(Item(f"late{i}"))
            b.submit(late[-1])
            await asyncio.sleep(0.005)
        await asyncio.gather(first.done, *(w.done for w in late))
        return engine.batches

    batches = run(scenario())
    assert [len(names) for _, names in batches] == [1, 10]


def test_a_lone_request_does_not_wait_for_company():
    async def scenario() -> list[float]:
        engine = Engine(seconds=0.0)
        b = Batcher(engine.run, max_batch_size=32, wait_s=0.5)
        took = []
        for i in range(5):
            item = Item(str(i))
            start = time.perf_counter()
            b.submit(item)
            await item.done
            took.append(time.perf_counter() - start)
        return took

    assert max(run(scenario())) < 0.1  # far below wait_s


def test_overlapping_requests_wait_to_gather_a_batch():
    async def scenario() -> list:
        engine = Engine(seconds=0.05)
        b = Batcher(engine.run, max_batch_size=32, wait_s=0.2)
        a, bb, c = Item("a"), Item("b"), Item("c")
        b.submit(a)
        await asyncio.sleep(0.01)
        b.submit(bb)  # overlaps a: from now on the batcher gathers
        await a.done
        await asyncio.sleep(0.05)  # well inside wait_s after a's batch ended
        b.submit(c)
        await asyncio.gather(bb.done, c.done)
        return engine.batches

    assert [names for _, names in run(scenario())] == [["a"], ["b", "c"]]


def test_a_full_batch_starts_without_waiting():
    async def scenario() -> tuple[float, list]:
        engine = Engine(seconds=0.0)
        b = Batcher(engine.run, max_batch_size=4, wait_s=5.0)
        items = [Item(str(i)) for i in range(9)]
        start = time.perf_counter()
        for w in items:
            b.submit(w)
        await asyncio.gather(*(w.done for w in items[:8]))
        took = time.perf_counter() - start
        for w in items[8:]:
            w.dropped = True  # lets the loop finish its wait for the ninth
        return took, engine.batches

    took, batches = run(scenario())
    assert took < 1.0 and [names for _, names in batches[:2]] == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]


def test_kinds_never_share_a_batch_and_the_oldest_kind_goes_first():
    async def scenario() -> list:
        engine = Engine(seconds=0.05)
        b = Batcher(engine.run, max_batch_size=32, wait_s=0.0)
        blocker = Item("blocker")
        b.submit(blocker)
        await asyncio.sleep(0.01)
        items = [Item("s1", "stream"), Item("g1"), Item("s2", "stream"), Item("g2")]
        for w in items:
            b.submit(w)
        await asyncio.gather(blocker.done, *(w.done for w in items))
        return engine.batches

    assert run(scenario()) == [("generate", ["blocker"]), ("stream", ["s1", "s2"]), ("generate", ["g1", "g2"])]


def test_dropped_work_is_left_out():
    async def scenario() -> list:
        engine = Engine(seconds=0.05)
        b = Batcher(engine.run, max_batch_size=32, wait_s=0.0)
        items = [Item(str(i)) for i in range(4)]
        b.submit(items[0])
        await asyncio.sleep(0.01)
        for w in items[1:]:
            b.submit(w)
        items[2].dropped = True  # its caller went away while it waited
        await asyncio.gather(items[0].done, items[1].done, items[3].done)
        return engine.batches

    assert [names for _, names in run(scenario())] == [["0"], ["1", "3"]]


def test_a_failed_batch_does_not_stop_the_loop(caplog: pytest.LogCaptureFixture):
    async def scenario() -> list:
        engine = Engine(seconds=0.0, fail_first=True)
        b = Batcher(engine.run, max_batch_size=32, wait_s=0.0)
        b.submit(Item("lost"))
        await asyncio.sleep(0.05)
        after = Item("after")
        b.submit(after)
        return await after.done

    assert run(scenario()) == 2
    assert "a generate batch of 1 failed" in caplog.text
