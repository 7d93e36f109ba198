"""The one thread of `facial-r1 serve` that runs the model, fed by a queue of images from any
requests (`Worker` over a `JobQueue`).

A request reserves room in the queue before its images are decoded (a full queue answers 503), then
queues them; the worker takes up to `max_batch` queued images at a time and analyses them as one
batch. It survives anything a request can do (cancelled futures are skipped, a failing batch fails
only its own requests); should it die anyway, a supervisor restarts it.
"""

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager

from facial_r1.analyze import FaceAnalyser
from facial_r1.errors import FacialR1Error
from facial_r1.serve.limits import Limits

log = logging.getLogger(__name__)


class JobQueue:
    """A FIFO of (image, future) jobs from which a timed-out request can take its jobs back out."""

    def __init__(self):
        self._items: list = []
        self._cv = threading.Condition()

    def put(self, item) -> None:
        with self._cv:
            self._items.append(item)
            self._cv.notify()

    def get(self, timeout: float | None = None):
        with self._cv:
            if not self._cv.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            return self._items.pop(0)

    def remove(self, futures) -> int:
        """Take out the jobs of these futures that are still waiting; returns how many."""
        with self._cv:
            keep = [it for it in self._items if it is None or it[1] not in futures]
            n, self._items[:] = len(self._items) - len(keep), keep
            return n

    def qsize(self) -> int:
        with self._cv:
            return len(self._items)


class Worker:
    """The one thread that runs the analyser: `enqueue(images)`, then `await wait(futures)` -> per
    image its faces."""

    def __init__(self, analyser: FaceAnalyser, limits: Limits):
        self.analyser, self.limits = analyser, limits
        self.queue = JobQueue()
        self.batches = 0  # batches run so far
        self.restarts = 0  # times the supervisor restarted a dead worker thread
        self._reserved = 0  # images of requests being decoded, counted against max_queue
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = self._new_thread()
        self._supervisor = threading.Thread(target=self._supervise, name="facial-r1-supervisor", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        self._thread.start()
        self._supervisor.start()

    def stop(self) -> None:
        self._stopping.set()
        self.queue.put(None)
        self._thread.join(timeout=60)

    @contextmanager
    def reserve(self, n: int):
        """Room for `n` images in the queue, held while they decode; 503 when there is none."""
        from fastapi import HTTPException

        if not self.alive:
            raise HTTPException(503, "the model worker has stopped")
        with self._lock:
            waiting = self.queued + self._reserved
            if waiting + n > self.limits.max_queue:
                raise HTTPException(503, f"{waiting} images queued; retry later", headers={"Retry-After": "1"})
            self._reserved += n
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= n

    def enqueue(self, images: list) -> list[Future]:
        """Queue the images (room was reserved); one future per image."""
        futures = [Future() for _ in images]
        for image, future in zip(images, futures, strict=True):
            self.queue.put((image, future))
        return futures

    async def wait(self, futures: list[Future], timeout: float | None = None) -> list[list[dict]]:
        """The faces of each queued image; 504 after `timeout` s, when the request's images still
        waiting leave the queue (and so do they when the client goes away)."""
        from fastapi import HTTPException

        try:
            return list(await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), timeout))
        # timed out (asyncio.TimeoutError: not the builtin TimeoutError before Python 3.11), or the client went away
        except (asyncio.TimeoutError, asyncio.CancelledError) as e:
            self.queue.remove(set(futures))
            for future in futures:
                future.cancel()
            if isinstance(e, asyncio.TimeoutError):
                raise HTTPException(504, f"the analysis took longer than the {timeout:g} s request timeout") from None
            raise

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="facial-r1-worker", daemon=True)

    def _supervise(self) -> None:
        """Restart the worker thread if it ever dies without being stopped."""
        while not self._stopping.wait(0.5):
            if not self._thread.is_alive() and not self._stopping.is_set():
                log.error("the worker thread died; restarting it")
                self.restarts += 1
                self._thread = self._new_thread()
                self._thread.start()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            # A future whose request timed out or went away is cancelled: skip it. Once running,
            # a future can no longer be cancelled, so setting its result below cannot raise.
            batch = [(image, future) for image, future in batch if future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                found = self.analyser([image for image, _ in batch])
                if len(found) != len(batch):
                    raise FacialR1Error(f"the analyser returned {len(found)} results for {len(batch)} images")
            except Exception as e:  # one image's failure must not fail the others: retry them one by one
                if len(batch) == 1:
                    self._fail(batch[0][1], e)
                    continue
                log.exception("a batch of %d images failed; analysing them one at a time", len(batch))
                for item in batch:
                    self._run_one(*item)
                continue
            self.batches += 1
            for (_, future), faces in zip(batch, found, strict=True):
                future.set_result(faces)

    def _run_one(self, image, future: Future) -> None:
        try:
            future.set_result(self.analyser([image])[0])
        except Exception as e:
            self._fail(future, e)

    @staticmethod
    def _fail(future: Future, e: Exception) -> None:
        """This request gets a 500 naming the error; the server goes on."""
        log.error("analysis of an image failed: %s: %s", type(e).__name__, e, exc_info=e)
        future.set_exception(FacialR1Error(f"analysis failed: {type(e).__name__}: {e}"))

    def _next_batch(self) -> list | None:
        """Block for one queued image, then take more for up to `batch_wait` seconds; None: stop."""
        first = self.queue.get()
        if first is None:
            return None
        batch, deadline = [first], time.monotonic() + self.limits.batch_wait
        while len(batch) < self.limits.max_batch:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch
