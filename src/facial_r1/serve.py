"""`facial-r1 serve`: a web page and a JSON API over the face analyser (the [serve] extra).

    facial-r1 serve --backend landmarks            # MediaPipe AUs, no model needed
    facial-r1 serve --model runs/tiny-cpu/grpo     # a trained checkpoint writes the analysis
    curl -F image=@face.jpg http://127.0.0.1:8000/v1/analyze

GET / is the page (upload, drop or webcam snapshot; boxes, AUs with FACS names, emotion,
reasoning). POST /v1/analyze takes multipart `image` files or JSON {"images": [{"name", "data"
(base64)}]} and answers {"results": [...]}, the objects `facial-r1 analyze` prints. GET /healthz,
GET /v1/facs (the AU table) and the OpenAPI schema at /openapi.json (/docs to try it).

One worker thread owns the model. A request first reserves room in the queue (a full queue
answers 503 + Retry-After before any image is decoded), then its images are decoded, at most
`max_decodes` at a time, each reduced at once to `max_side` pixels (a JPEG is decoded at a
reduced scale), and queued; the worker takes up to `max_batch` queued images at a time, from any
requests, and analyses them as one batch. Boxes are scaled back to the uploaded image's pixels.

Memory is bounded by design (the abuse benchmark measures it against this bound):

    peak RSS <= base + max_connections * max_body_bytes                   (bodies being read)
                     + max_decodes * 12 * max_pixels                      (decodes: RGBA + 2 copies)
                     + (max_queue + max_batch) * 3 * max_side**2          (reduced images waiting)

`base` is the process with its model loaded (`memory_bound()` computes the rest). A request that
waits longer than `request_timeout` gets 504 and its images leave the queue. The worker thread
survives anything a request can do (cancelled futures are skipped, a failing batch fails only
its own requests); should it die anyway, a supervisor restarts it, and /healthz counts restarts.
"""

import asyncio
import base64
import binascii
import importlib.resources
import json
import logging
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import Future
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from facial_r1.analyze import FaceAnalyser, face_results
from facial_r1.data.schema import load_image
from facial_r1.errors import FacialR1Error, ImageError
from facial_r1.landmarks import MIN_FACE

log = logging.getLogger(__name__)

FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF"}  # MPO: what PIL calls many phone JPEGs
STATUS = {"not_image": 415, "format": 415, "too_large": 413, "corrupt": 422}  # ImageError.kind -> HTTP


@dataclass
class Limits:
    max_body_bytes: int = 16 * 2**20
    max_pixels: int = 8_000_000  # pixels decoded per image (a JPEG's reduced draft counts, not its header)
    max_side: int = 1600  # every image is reduced to this longer side right after decoding
    max_images: int = 8  # per request
    max_batch: int = 8  # images per model batch
    max_queue: int = 32  # images waiting (and reserved for decoding); more answers 503
    max_decodes: int = 2  # images decoded at once
    max_connections: int = 32  # requests in flight; more answers 503 + Retry-After before the body is read
    body_timeout: float = 30.0  # seconds a client may take between two chunks of its body; then 408
    request_timeout: float = 60.0  # seconds; then 504 and the request's images leave the queue
    batch_wait: float = 0.01  # seconds the worker waits to fill a batch


def memory_bound(limits: Limits, base_bytes: int) -> int:
    """The documented bound on the server's peak RSS, in bytes, above a process of `base_bytes`."""
    return (base_bytes + limits.max_connections * limits.max_body_bytes + limits.max_decodes * 12 * limits.max_pixels
            + (limits.max_queue + limits.max_batch) * 3 * limits.max_side ** 2)


def create_app(analyser: FaceAnalyser, limits: Limits | None = None):
    """The ASGI app. The worker thread starts and stops with the app's lifespan."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.concurrency import run_in_threadpool

    limits = limits or Limits()
    worker = Worker(analyser, limits)
    decodes = asyncio.Semaphore(limits.max_decodes)

    class ImageIn(BaseModel):
        model_config = ConfigDict(extra="forbid")  # a "path" or "url" field is refused, not ignored
        name: str = Field("image", max_length=255, description="a label echoed back as `file`; never opened")
        data: str = Field(description="the image file's bytes, base64 (a data: URL prefix is allowed)")

    class AnalyzeJSON(BaseModel):
        model_config = ConfigDict(extra="forbid")
        images: list[ImageIn] = Field(min_length=1)

    class Result(BaseModel):
        file: str
        frame: int | None = None
        box: list[int] | None = Field(None, description="x0, y0, x1, y1 in pixels")
        aus: list[str] | None = None
        emotion: str | None = None
        reasoning: str | None = None
        error: str | None = Field(None, description='e.g. "no face found"; the other fields are then absent')

    class AnalyzeResponse(BaseModel):
        results: list[Result]

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="facial-r1", version="0.1.0", lifespan=lifespan,
                  description="Explainable facial emotion analysis: per face, the AUs, the emotion and the reasoning.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    app.add_middleware(InFlightLimit, max_requests=limits.max_connections, timeout=limits.body_timeout)  # outermost
    app.state.worker = worker

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return importlib.resources.files("facial_r1").joinpath("web/index.html").read_text()

    @app.get("/healthz")
    def healthz():
        body = {"status": "ok" if worker.alive else "worker stopped", "backend": analyser.backend,
                "model": analyser.model, "queued": worker.queued, "batches": worker.batches,
                "max_batch": limits.max_batch, "worker_restarts": worker.restarts}
        return JSONResponse(body, status_code=200 if worker.alive else 503)

    @app.get("/v1/facs")
    def facs():
        from facial_r1.facs import AU_TABLE

        return {code: {"name": au.name, "look": au.look} for code, au in AU_TABLE.items()}

    # The route reads its body by hand (multipart or JSON), so the schema of both is declared here.
    request_body = {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/json": {"schema": {"$ref": "#/components/schemas/AnalyzeJSON"}}}}
    refusals = {413: {"description": "body, image count or pixel count over the limit"},
                415: {"description": "not an image, or a format not accepted"},
                422: {"description": "a corrupt image or a malformed request"},
                503: {"description": "the queue is full; retry later"},
                504: {"description": "the analysis took longer than the request timeout"}}

    @app.post("/v1/analyze", response_model=AnalyzeResponse, response_model_exclude_unset=True,
              openapi_extra={"requestBody": request_body}, responses=refusals)
    async def analyze(request: Request):
        uploads = await _read_uploads(request)
        if len(uploads) > limits.max_images:
            raise HTTPException(413, f"{len(uploads)} images, over the {limits.max_images} per request limit")
        with worker.reserve(len(uploads)):  # 503 before anything is decoded when the queue is full
            images = []
            for name, data in uploads:
                async with decodes:
                    images.append(await run_in_threadpool(_decode, name, data))
            del uploads[:]  # the raw bytes are no longer needed
            futures = worker.enqueue(images)  # the queue now holds them; the reservation ends
        try:
            found = await worker.wait(futures, limits.request_timeout)
        except FacialR1Error as e:
            raise HTTPException(500, str(e)) from None
        return {"results": [r for image, faces in zip(images, found, strict=True)
                            for r in face_results({"file": image.info["name"], "frame": None},
                                                  [scaled(face, image.info["scale"]) for face in faces])]}

    async def _read_uploads(request: Request) -> list[tuple[str, bytes]]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            async with request.form(max_files=limits.max_images + 1, max_fields=limits.max_images + 1) as form:
                files = form.getlist("image")
                if not files or any(isinstance(f, str) for f in files):
                    raise HTTPException(422, "multipart form needs one or more files in the field `image`")
                return [(f.filename or "image", await f.read()) for f in files]
        if kind == "application/json":
            try:
                body = AnalyzeJSON.model_validate_json(await request.body())
            except ValidationError as e:
                where = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
                raise HTTPException(422, f"bad JSON body: {where}") from None
            return [(im.name, _b64(im.name, im.data)) for im in body.images]
        raise HTTPException(415, f"send multipart/form-data or application/json, not {kind or 'no content type'}")

    def _decode(name: str, data: bytes):
        try:
            image = load_image(data, name, limits.max_pixels, FORMATS, limits.max_side)
        except ImageError as e:
            raise HTTPException(STATUS[e.kind], str(e)) from None
        image.info["name"] = name
        return image

    def _b64(name: str, data: str) -> bytes:
        if data.startswith("data:"):
            data = data.partition(",")[2]
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"sample {name}: `data` is not valid base64") from None

    def openapi():  # adds the JSON body's schema, which no route parameter declares
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            json_body = AnalyzeJSON.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(json_body.pop("$defs", {}), AnalyzeJSON=json_body)
        return app.openapi_schema

    app.openapi = openapi
    return app


def scaled(face: dict, scale: float) -> dict:
    """A face found on a reduced image, with its box in the uploaded image's pixels."""
    if scale == 1.0 or not face.get("box"):
        return face
    return {**face, "box": [round(v * scale) for v in face["box"]]}


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
    """The one thread that runs the analyser; `await submit(images)` -> per image its faces."""

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
        except (TimeoutError, asyncio.CancelledError) as e:  # timed out, or the client went away
            self.queue.remove(set(futures))
            for future in futures:
                future.cancel()
            if isinstance(e, TimeoutError):
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


async def send_json(send, status: int, detail: str, headers: tuple = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class InFlightLimit:
    """ASGI middleware: at most `max_requests` HTTP requests in flight; the next gets 503 with
    Retry-After. Its body is read and dropped chunk by chunk first (nothing kept, so memory stays
    bounded), so the client is not cut off mid-upload and sees the 503 rather than a reset."""

    def __init__(self, app, max_requests: int, timeout: float = 30.0):
        self.app, self.max_requests, self.in_flight, self.timeout = app, max_requests, 0, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/healthz":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_requests:
            try:
                while True:
                    message = await asyncio.wait_for(receive(), self.timeout)
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        break
            except TimeoutError:
                pass
            return await send_json(send, 503, f"{self.in_flight} requests in flight; retry later",
                                   ((b"retry-after", b"1"),))
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 before it is read, by its Content-Length or,
    when streamed without one, as soon as the bytes received pass the limit; a client that sends
    nothing for `timeout` seconds mid-body gets 408 (a stalled upload cannot hold a slot forever)."""

    def __init__(self, app, max_bytes: int, timeout: float = 30.0):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send)
        received, started, body_done = 0, False, False

        async def counting_receive():
            nonlocal received, body_done
            if body_done:  # after the body, receive() only waits for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise _TooSlow from None
            received += len(message.get("body", b""))
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            if received > self.max_bytes:
                raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send)
        except _TooSlow:
            if started:
                raise
            await send_json(send, 408, f"no body data for {self.timeout:g} s; request abandoned")

    async def _refuse(self, send):
        await send_json(send, 413, f"request body over the {self.max_bytes} byte limit")


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class ServerURL(str):
    """A served URL that also knows its server's process id (to read its memory)."""

    pid: int


def peak_rss_bytes(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))


@contextmanager
def subprocess_server(*args: str, timeout: float = 120.0) -> Iterator[ServerURL]:
    """`facial-r1 serve ARGS` in a child process on a free loopback port, as a user starts it; yields
    its URL (with `.pid`) once /healthz answers, stops it on exit. For tests and the benchmarks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The server's log goes to a file: a pipe nobody reads fills up and blocks the server's logging.
    log_file = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "facial_r1.cli", "serve", *args, "--port", str(port)],
                            stdout=log_file, stderr=subprocess.STDOUT, text=True)
    url, deadline = ServerURL(f"http://127.0.0.1:{port}"), time.monotonic() + timeout
    url.pid = proc.pid
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    log_file.seek(0)
                    raise FacialR1Error(f"facial-r1 serve did not start:\n{log_file.read()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.close()


def main(backend: str, model: str | None, host: str, port: int, landmarker: str | None = None,
         max_new_tokens: int = 160, limits: Limits | None = None, min_face: int = MIN_FACE,
         threads: int = 1) -> None:
    try:
        import uvicorn
    except ImportError:
        raise FacialR1Error("serve needs the [serve] extra: pip install 'facial-r1[serve]'") from None
    analyser = FaceAnalyser(backend, model, landmarker, max_new_tokens, min_face, threads)
    log.info("serving the %s backend%s on http://%s:%d", backend, f" ({model})" if model else "", host, port)
    try:
        limits = limits or Limits()
        # uvicorn's own cap is a socket-level safety net above the app's InFlightLimit
        uvicorn.run(create_app(analyser, limits), host=host, port=port, log_level="info",
                    limit_concurrency=2 * limits.max_connections + 16)
    finally:
        analyser.close()
