"""What one request may cost `facial-r1 serve`: the `Limits`, the memory they bound, the ASGI
middlewares that enforce them before a route runs.

Memory is bounded by design (the abuse benchmark and tests/test_serve.py measure it against this):

    peak RSS <= base + max_connections * max_body_bytes            (bodies being read, then held until decoded)
                     + max_body_bytes                              (the one JSON body being parsed: a second copy)
                     + max_decodes * 12 * max_pixels               (decodes: RGBA + 2 copies)
                     + (max_queue + max_batch) * 3 * max_side**2   (reduced images waiting)

`base` is the process with its model loaded. A JSON body is held twice while it is parsed: its chunks
beside their join, then those bytes beside the strings they parse to. The bytes then go, and each
base64 text goes as its (smaller) file is decoded, so one copy is left to count per connection. The
parse runs on the event loop without an await, so one body at a time is held twice. Measured with
tracemalloc on the route: a peak of 2.0x the body (3.75x when `request.body()` kept the bytes for the
whole request and `base64.b64decode` copied every text before decoding it).
"""

import asyncio
import json
from dataclasses import dataclass


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
    """The documented bound on the server's peak RSS, in bytes, above a process of `base_bytes`.

    >>> memory_bound(Limits(max_connections=1, max_body_bytes=10, max_decodes=0, max_queue=0, max_batch=0), 5)
    25
    """
    return (base_bytes + limits.max_connections * limits.max_body_bytes + limits.max_body_bytes
            + limits.max_decodes * 12 * limits.max_pixels
            + (limits.max_queue + limits.max_batch) * 3 * limits.max_side ** 2)


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
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
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
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
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


async def send_json(send, status: int, detail: str, headers: tuple = ()) -> None:
    """A JSON error answer sent from a middleware, before (or instead of) the app's own."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})
