"""`facial-r1 serve`: a web page and a JSON API over the face analyser (the [serve] extra).

    facial-r1 serve --backend landmarks            # MediaPipe AUs, no model needed
    facial-r1 serve --model runs/tiny-cpu/grpo     # a trained checkpoint writes the analysis
    curl -F image=@face.jpg http://127.0.0.1:8000/v1/analyze

GET / is the page (upload, drop or webcam snapshot; boxes, AUs with FACS names, emotion,
reasoning). POST /v1/analyze takes multipart `image` files or JSON {"images": [{"name", "data"
(base64)}]} and answers {"results": [...]}, the objects `facial-r1 analyze` prints. GET /healthz,
GET /v1/facs (the AU table) and the OpenAPI schema at /openapi.json (/docs to try it).

One worker thread owns the model. Requests decode and check their images on the way in (the body
limit is enforced before the body is read, the pixel limit on the image header), then queue
them; the worker takes up to `max_batch` queued images at a time, from any requests, and
analyses them as one batch. A full queue answers 503 rather than piling up.
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
import threading
import time
import urllib.request
from concurrent.futures import Future
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from facial_r1.analyze import FaceAnalyser, face_results
from facial_r1.data.schema import MAX_IMAGE_PIXELS, load_image
from facial_r1.errors import FacialR1Error, ImageError

log = logging.getLogger(__name__)

FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF"}  # MPO: what PIL calls many phone JPEGs
STATUS = {"not_image": 415, "format": 415, "too_large": 413, "corrupt": 422}  # ImageError.kind -> HTTP


@dataclass
class Limits:
    max_body_bytes: int = 16 * 2**20
    max_pixels: int = MAX_IMAGE_PIXELS
    max_images: int = 8  # per request
    max_batch: int = 8  # images per model batch
    max_queue: int = 64  # images waiting; more answers 503
    batch_wait: float = 0.01  # seconds the worker waits to fill a batch


def create_app(analyser: FaceAnalyser, limits: Limits | None = None):
    """The ASGI app. The worker thread starts and stops with the app's lifespan."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.concurrency import run_in_threadpool

    limits = limits or Limits()
    worker = Worker(analyser, limits)

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
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.state.worker = worker

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return importlib.resources.files("facial_r1").joinpath("web/index.html").read_text()

    @app.get("/healthz")
    def healthz():
        body = {"status": "ok" if worker.alive else "worker stopped", "backend": analyser.backend,
                "model": analyser.model, "queued": worker.queued, "batches": worker.batches,
                "max_batch": limits.max_batch}
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
                503: {"description": "the queue is full; retry later"}}

    @app.post("/v1/analyze", response_model=AnalyzeResponse, response_model_exclude_unset=True,
              openapi_extra={"requestBody": request_body}, responses=refusals)
    async def analyze(request: Request):
        uploads = await _read_uploads(request)
        if len(uploads) > limits.max_images:
            raise HTTPException(413, f"{len(uploads)} images, over the {limits.max_images} per request limit")
        images = [await run_in_threadpool(_decode, name, data) for name, data in uploads]
        try:
            found = await worker.submit(images)
        except FacialR1Error as e:
            raise HTTPException(500, str(e)) from None
        return {"results": [r for (name, _), faces in zip(uploads, found, strict=True)
                            for r in face_results({"file": name, "frame": None}, faces)]}

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
            return load_image(data, name, limits.max_pixels, FORMATS)
        except ImageError as e:
            raise HTTPException(STATUS[e.kind], str(e)) from None

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


class Worker:
    """The one thread that runs the analyser; `await submit(images)` -> per image its faces."""

    def __init__(self, analyser: FaceAnalyser, limits: Limits):
        self.analyser, self.limits = analyser, limits
        self.queue: queue.Queue = queue.Queue()
        self.batches = 0  # batches run so far
        self._thread = threading.Thread(target=self._run, name="facial-r1-worker", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=60)

    async def submit(self, images: list) -> list[list[dict]]:
        from fastapi import HTTPException

        if not self.alive:
            raise HTTPException(503, "the model worker has stopped")
        if self.queued + len(images) > self.limits.max_queue:
            raise HTTPException(503, f"{self.queued} images queued; retry later", headers={"Retry-After": "1"})
        futures = [Future() for _ in images]
        for image, future in zip(images, futures, strict=True):
            self.queue.put((image, future))
        return list(await asyncio.gather(*map(asyncio.wrap_future, futures)))

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                found = self.analyser([image for image, _ in batch])
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


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 before it is read, by its Content-Length or,
    when streamed without one, as soon as the bytes received pass the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send)
        received, started = 0, False

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
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

    async def _refuse(self, send):
        body = json.dumps({"detail": f"request body over the {self.max_bytes} byte limit"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


@contextmanager
def subprocess_server(*args: str, timeout: float = 120.0) -> Iterator[str]:
    """`facial-r1 serve ARGS` in a child process on a free loopback port, as a user starts it; yields
    its URL once /healthz answers, stops it on exit. For tests and the load benchmark."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "facial_r1.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise FacialR1Error(f"facial-r1 serve did not start:\n{proc.communicate()[0]}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(backend: str, model: str | None, host: str, port: int, landmarker: str | None = None,
         max_new_tokens: int = 160, limits: Limits | None = None) -> None:
    try:
        import uvicorn
    except ImportError:
        raise FacialR1Error("serve needs the [serve] extra: pip install 'facial-r1[serve]'") from None
    analyser = FaceAnalyser(backend, model, landmarker, max_new_tokens)
    log.info("serving the %s backend%s on http://%s:%d", backend, f" ({model})" if model else "", host, port)
    try:
        uvicorn.run(create_app(analyser, limits), host=host, port=port, log_level="info")
    finally:
        analyser.close()
