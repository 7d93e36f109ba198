"""`facial-r1 serve`: the face analyser over HTTP, as a web page or a JSON API (the [serve] extra).

    facial-r1 serve --backend landmarks            # MediaPipe AUs, no model needed
    facial-r1 serve --model runs/tiny-cpu/grpo     # a trained checkpoint writes the analysis
    curl -F image=@face.jpg http://127.0.0.1:8000/v1/analyze

GET / is the page (upload, drop or webcam snapshot; boxes, AUs with FACS names, emotion,
reasoning). POST /v1/analyze takes multipart `image` files or JSON {"images": [{"name", "data"
(base64)}]} and answers {"results": [...]}, the objects `facial-r1 analyze` prints. GET /healthz,
GET /v1/facs (the AU table) and the OpenAPI schema at /openapi.json (/docs to try it).

The modules, one noun each: `app` (the routes), `jobs` (the queue and the worker thread that owns
the model), `limits` (what a request may cost, and the memory bound that follows), `child` (a
server in a child process, for the tests and the benchmarks). A request that waits longer than
`request_timeout` gets 504 and its images leave the queue; /healthz counts worker restarts.
"""

import logging

from facial_r1.analyze import FaceAnalyser
from facial_r1.errors import FacialR1Error
from facial_r1.landmarks import MIN_FACE
from facial_r1.serve.child import ServerURL, peak_rss_bytes, subprocess_server
from facial_r1.serve.jobs import JobQueue, Worker
from facial_r1.serve.limits import BodyLimit, InFlightLimit, Limits, memory_bound

__all__ = ["BodyLimit", "InFlightLimit", "JobQueue", "Limits", "ServerURL", "Worker", "create_app", "main",
           "memory_bound", "peak_rss_bytes", "subprocess_server"]

log = logging.getLogger(__name__)


def __getattr__(name: str):
    # `create_app` is imported on first use: its module needs FastAPI, the [serve] extra, and without
    # it `main` must still be reached to say so.
    if name == "create_app":
        from facial_r1.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(backend: str, model: str | None, host: str, port: int, landmarker: str | None = None,
         max_new_tokens: int = 160, limits: Limits | None = None, min_face: int = MIN_FACE,
         threads: int = 1) -> None:
    try:
        import uvicorn

        from facial_r1.serve.app import create_app
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
