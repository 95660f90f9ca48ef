"""The batching queues: batches form by size and by wait, a full queue refuses, a caller that
went away takes nothing from the encoder, errors reach every caller, stop drains."""
import asyncio
import threading
import time

import pytest

from vlrt.serve.batching import Batcher, Overloaded


class Recorder:
    """The encoder: records its batches. With `hold`, its first batch waits until `release` is
    set (the test decides when that batch ends); `entered` is set when a batch starts."""

    def __init__(self, *, hold: bool = False, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.fail = fail
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(30), "the test never released the batch"
        if self.fail:
            raise RuntimeError("encoder broke")
        return [x * 10 for x in items]

    async def encoding(self) -> None:
        """Until a batch is in the encoder."""
        assert await asyncio.to_thread(self.entered.wait, 30)


async def queued(batcher: Batcher, depth: int) -> None:
    """Until `depth` items wait in the queue (each submit task has run up to its await)."""
    while batcher.depth < depth:
        await asyncio.sleep(0)  # a turn of the event loop, not a timed wait


def run(coro):
    return asyncio.run(coro)


def test_full_batch_leaves_without_waiting():
    fn = Recorder()

    async def main():
        b = Batcher("t", fn, max_batch=4, max_wait_s=30.0, max_queue=16)
        b.start()
        t0 = time.perf_counter()
        done = await asyncio.gather(*(b.submit(i) for i in range(4)))
        took = time.perf_counter() - t0
        await b.stop()
        return done, took

    done, took = run(main())
    assert [d.result for d in done] == [0, 10, 20, 30]
    assert fn.batches == [[0, 1, 2, 3]] and all(d.batch == 4 for d in done)
    assert took < 5.0  # the 30 s wait was not needed: the batch was full
    assert fn.threads == {"vlrt-t_0"}  # the encoder ran on the queue's own thread


def test_partial_batch_leaves_after_max_wait():
    fn = Recorder()

    async def main():
        b = Batcher("t", fn, max_batch=8, max_wait_s=0.05, max_queue=16)
        b.start()
        done = await asyncio.gather(b.submit(1), b.submit(2))
        await b.stop()
        return done

    done = run(main())
    assert fn.batches == [[1, 2]]
    assert all(d.queued_s >= 0.04 for d in done)  # waited for company, about max_wait


def test_requests_arriving_during_a_batch_form_the_next():
    fn = Recorder(hold=True)

    async def main():
        b = Batcher("t", fn, max_batch=4, max_wait_s=0.0, max_queue=16)
        b.start()
        first = asyncio.ensure_future(b.submit(0))
        await fn.encoding()  # batch [0] is encoding now
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]
        await queued(b, 5)
        fn.release.set()
        await asyncio.gather(first, *rest)
        await b.stop()

    run(main())
    assert fn.batches == [[0], [1, 2, 3, 4], [5]]


def test_full_queue_refuses_with_retry_after():
    fn = Recorder(hold=True)

    async def main():
        b = Batcher("video", fn, max_batch=1, max_wait_s=0.0, max_queue=2)
        b.start()
        running = asyncio.ensure_future(b.submit(0))
        await fn.encoding()
        waiting = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await queued(b, 2)
        with pytest.raises(Overloaded) as info:
            await b.submit(3)
        fn.release.set()
        await asyncio.gather(running, *waiting)
        await b.stop()
        return info.value

    exc = run(main())
    assert exc.queue == "video" and exc.retry_after >= 1.0
    assert "full" in str(exc)
    assert fn.batches == [[0], [1], [2]]


def test_cancelled_caller_takes_nothing_from_the_encoder():
    fn = Recorder(hold=True)

    async def main():
        b = Batcher("t", fn, max_batch=4, max_wait_s=0.0, max_queue=16)
        b.start()
        first = asyncio.ensure_future(b.submit(0))
        await fn.encoding()
        gone = asyncio.ensure_future(b.submit(1))
        kept = asyncio.ensure_future(b.submit(2))
        await queued(b, 2)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        fn.release.set()
        await asyncio.gather(first, kept)
        await b.stop()
        return kept.result()

    assert run(main()).result == 20
    assert fn.batches == [[0], [2]]


def test_an_encoder_error_reaches_every_caller_of_the_batch():
    fn = Recorder(fail=True)

    async def main():
        b = Batcher("t", fn, max_batch=2, max_wait_s=1.0, max_queue=4)
        b.start()
        out = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
        await b.stop()
        return out

    out = run(main())
    assert [str(e) for e in out] == ["encoder broke", "encoder broke"]


def test_stop_finishes_queued_work_and_refuses_new():
    fn = Recorder(hold=True)

    async def main():
        b = Batcher("t", fn, max_batch=2, max_wait_s=10.0, max_queue=16)
        b.start()
        pending = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
        await fn.encoding()  # [0, 1] left full; 2 waits for company, up to 10 s
        await queued(b, 1)
        stopping = asyncio.ensure_future(b.stop())
        fn.release.set()
        t0 = time.perf_counter()
        await stopping  # the lone third item does not wait out the 10 s
        assert time.perf_counter() - t0 < 5
        with pytest.raises(Overloaded):
            await b.submit(9)
        return [p.result().result for p in pending]

    assert run(main()) == [0, 10, 20]
