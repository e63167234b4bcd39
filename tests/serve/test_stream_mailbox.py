"""The hand-off of stream deltas from the engine thread to a stream's coroutine (serve/replica.py's _Mailbox)."""

from __future__ import annotations

import asyncio
import threading
import time

from phifleet.engine import StreamDelta
from phifleet.serve.replica import _Mailbox


def delta(i: int, final: bool = False) -> StreamDelta:
    return StreamDelta(str(i), "stop" if final else None, 1, i + 1, None)


def test_every_delta_arrives_in_order_and_the_loop_wakes_far_less_than_once_per_token():
    """An engine thread produces 2,000 deltas while the coroutine, like a stream with stream_interval_s, sleeps
    between chunks: nothing is lost or reordered, and a sleeping reader is not woken per token."""
    n = 2000

    async def main() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        wakes = {"n": 0}
        real = loop.call_soon_threadsafe

        def counting(*args, **kw):
            wakes["n"] += 1
            return real(*args, **kw)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        box = _Mailbox(loop)

        def engine() -> None:
            for i in range(n):
                box.put(delta(i, final=i == n - 1))
                if i % 100 == 0:
                    time.sleep(0.002)  # steps take time

        thread = threading.Thread(target=engine)
        thread.start()
        got: list[str] = []
        while True:
            items = await box.get()
            await asyncio.sleep(0.001)  # the chunk interval: tokens pile up meanwhile
            items += box.take()
            got += [d.text for d in items]
            if items[-1].finish_reason:
                break
        thread.join()
        return got, wakes["n"]

    got, wakes = asyncio.run(main())
    assert got == [str(i) for i in range(n)]
    assert wakes < n / 10


def test_a_reader_waiting_on_an_empty_mailbox_is_woken_by_a_put_from_another_thread():
    async def main() -> list:
        box = _Mailbox(asyncio.get_running_loop())
        threading.Timer(0.05, box.put, args=(RuntimeError("engine step failed"),)).start()
        return await asyncio.wait_for(box.get(), timeout=5)

    (item,) = asyncio.run(main())
    assert isinstance(item, RuntimeError)
