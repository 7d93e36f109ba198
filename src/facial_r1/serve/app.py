"""The ASGI app of `facial-r1 serve`: its routes, from a request's body to its JSON answer.

A request's images are read (multipart files, or JSON base64 texts decoded one at a time once the
body is parsed), counted against `max_images`, given room in the worker's queue, decoded at most
`max_decodes` at a time in threads (each reduced at once to `max_side` pixels), then queued for the
worker; boxes are scaled back to the uploaded image's pixels.
"""

import asyncio
import binascii
import importlib.resources
import re
from contextlib import asynccontextmanager
from functools import partial

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from facial_r1.analyze import FaceAnalyser, face_results
from facial_r1.data.schema import load_image
from facial_r1.errors import FacialR1Error, ImageError
from facial_r1.serve.jobs import Worker
from facial_r1.serve.limits import BodyLimit, InFlightLimit, Limits

FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF"}  # MPO: what PIL calls many phone JPEGs
STATUS = {"not_image": 415, "format": 415, "too_large": 413, "corrupt": 422}  # ImageError.kind -> HTTP
BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")  # what base64.b64decode(validate=True) accepts


def create_app(analyser: FaceAnalyser, limits: Limits | None = None) -> FastAPI:
    """The ASGI app. The worker thread starts and stops with the app's lifespan."""
    limits = limits or Limits()
    app = FastAPI(title="facial-r1", version="0.1.0", lifespan=lifespan,
                  description="Explainable facial emotion analysis: per face, the AUs, the emotion and the reasoning.")
    app.state.limits, app.state.worker = limits, Worker(analyser, limits)
    app.state.decodes = asyncio.Semaphore(limits.max_decodes)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    app.add_middleware(InFlightLimit, max_requests=limits.max_connections, timeout=limits.body_timeout)  # outermost
    app.include_router(router)
    app.openapi = partial(openapi, app)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.worker.start()
    yield
    app.state.worker.stop()


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


router = APIRouter()

# The route reads its body by hand (multipart or JSON), so the schema of both is declared here.
REQUEST_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"$ref": "#/components/schemas/AnalyzeJSON"}}}}
REFUSALS = {413: {"description": "body, image count or pixel count over the limit"},
            415: {"description": "not an image, or a format not accepted"},
            422: {"description": "a corrupt image or a malformed request"},
            503: {"description": "the queue is full; retry later"},
            504: {"description": "the analysis took longer than the request timeout"}}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page():
    return importlib.resources.files("facial_r1").joinpath("web/index.html").read_text()


@router.get("/healthz")
def healthz(request: Request):
    worker, limits = request.app.state.worker, request.app.state.limits
    body = {"status": "ok" if worker.alive else "worker stopped", "backend": worker.analyser.backend,
            "model": worker.analyser.model, "queued": worker.queued, "batches": worker.batches,
            "max_batch": limits.max_batch, "worker_restarts": worker.restarts}
    return JSONResponse(body, status_code=200 if worker.alive else 503)


@router.get("/v1/facs")
def facs():
    from facial_r1.facs import AU_TABLE

    return {code: {"name": au.name, "look": au.look} for code, au in AU_TABLE.items()}


@router.post("/v1/analyze", response_model=AnalyzeResponse, response_model_exclude_unset=True,
             openapi_extra={"requestBody": REQUEST_BODY}, responses=REFUSALS)
async def analyze(request: Request):
    limits, worker = request.app.state.limits, request.app.state.worker
    uploads = await read_uploads(request, limits.max_images)
    if len(uploads) > limits.max_images:
        raise HTTPException(413, f"{len(uploads)} images, over the {limits.max_images} per request limit")
    with worker.reserve(len(uploads)):  # 503 before anything is decoded when the queue is full
        images = await decode_all(uploads, limits, request.app.state.decodes)
        futures = worker.enqueue(images)  # the queue now holds them; the reservation ends
    try:
        found = await worker.wait(futures, limits.request_timeout)
    except FacialR1Error as e:
        raise HTTPException(500, str(e)) from None
    return {"results": [r for image, faces in zip(images, found, strict=True)
                        for r in face_results({"file": image.info["name"], "frame": None},
                                              [scaled(face, image.info["scale"]) for face in faces])]}


async def read_uploads(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    """(name, file bytes) of each image the request carries, multipart or JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=max_images + 1, max_fields=max_images + 1) as form:
            files = form.getlist("image")
            if not files or any(isinstance(f, str) for f in files):
                raise HTTPException(422, "multipart form needs one or more files in the field `image`")
            return [(f.filename or "image", await f.read()) for f in files]
    if kind == "application/json":
        return await read_json(request)
    raise HTTPException(415, f"send multipart/form-data or application/json, not {kind or 'no content type'}")


async def read_json(request: Request) -> list[tuple[str, bytes]]:
    """The images of a JSON body, base64-decoded. The body is never held more than twice: its bytes
    go once parsed, each base64 text once decoded (the bound in `limits` counts on it)."""
    # not request.body(): it keeps the bytes on the request until the answer is sent
    body = b"".join([chunk async for chunk in request.stream()])
    try:
        texts = [(image.name, image.data) for image in AnalyzeJSON.model_validate_json(body).images]
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
        raise HTTPException(422, f"bad JSON body: {where}") from None
    del body  # no await since the body arrived, so only one body at a time is ever held twice
    files = []
    while texts:  # popped: each text goes once its file is decoded
        name, text = texts.pop(0)
        if text.startswith("data:"):
            text = text.partition(",")[2]  # the data: URL goes here, before its base64 is decoded
        files.append((name, base64_bytes(name, text)))
    return files


def base64_bytes(name: str, text: str) -> bytes:
    """The bytes a base64 text encodes. binascii reads the text in place; base64.b64decode would
    first copy it to bytes."""
    try:
        if BASE64.fullmatch(text):
            return binascii.a2b_base64(text)
    except binascii.Error:  # e.g. the padding is wrong
        pass
    raise HTTPException(400, f"sample {name}: `data` is not valid base64")


async def decode_all(uploads: list[tuple[str, bytes]], limits: Limits, decodes: asyncio.Semaphore) -> list:
    """The uploads as reduced images, at most `max_decodes` decoding at once (across requests); each
    file's bytes are dropped once its image is decoded."""
    images = []
    while uploads:
        name, data = uploads.pop(0)
        async with decodes:
            images.append(await run_in_threadpool(decode, name, data, limits))
    return images


def decode(name: str, data: bytes, limits: Limits) -> Image.Image:
    """One file as an RGB image reduced to `max_side`; a bad file raises the status its ImageError's kind maps to."""
    try:
        image = load_image(data, name, limits.max_pixels, FORMATS, limits.max_side)
    except ImageError as e:
        raise HTTPException(STATUS[e.kind], str(e)) from None
    image.info["name"] = name
    return image


def scaled(face: dict, scale: float) -> dict:
    """A face found on a reduced image, with its box in the uploaded image's pixels."""
    if scale == 1.0 or not face.get("box"):
        return face
    return {**face, "box": [round(v * scale) for v in face["box"]]}


def openapi(app: FastAPI) -> dict:
    """The app's schema, with the JSON body that no route parameter declares."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        json_body = AnalyzeJSON.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(json_body.pop("$defs", {}), AnalyzeJSON=json_body)
    return app.openapi_schema
