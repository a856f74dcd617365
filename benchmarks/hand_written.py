"""Each hand-written piece of the serving path against what the frameworks provide, side by
side in one process (rounds alternate between the two; median of the rounds).

- ``QueryOnlyRoute`` (service/core/query_route.py) against FastAPI's ``APIRoute``, for an
  endpoint with /sample's query parameters, driven in-process through the ASGI app;
- ``encode_png`` (aae/images.py) against Pillow's PNG encoder (same zlib level);
  enlarged 16 times (``/sample?n=256&scale=16``), against Pillow given the enlarged
  picture;
- ``multipart_files`` (service/inference/inputs.py) against Starlette's form parser
  (python-multipart), for a one-file upload of a digit;
- ``BodySizeLimit`` (service/core/limits.py) against FastAPI's ``max_body_size``, for a POST
  whose route reads a 300-byte body.

    pip install -e '.[bench]' && python -m benchmarks.hand_written
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections.abc import Callable
from typing import Annotated

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.routing import APIRoute
from PIL import Image

from aae.images import encode_png
from service.core.limits import BodySizeLimit
from service.core.query_route import QueryOnlyRoute
from service.inference.inputs import multipart_files


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def compare(name: str, ours: Callable[[], object], theirs: Callable[[], object],
            calls: int, rounds: int) -> tuple[str, float, float]:
    ours(), theirs()  # warm up
    a, b = [], []
    for _ in range(rounds):
        a.append(per_call_us(ours, calls))
        b.append(per_call_us(theirs, calls))
    return name, statistics.median(a), statistics.median(b)


# -- an ASGI request driven in-process ------------------------------------------------------

def asgi_call(app, method: str, path: str, query: bytes = b"", body: bytes = b"",
              headers: list[tuple[bytes, bytes]] | None = None) -> Callable[[], int]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query, "root_path": "", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1), "headers": headers or []}
    loop = asyncio.new_event_loop()

    async def once() -> int:
        sent = False
        status = 0

        async def receive():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        return status

    def call() -> int:
        status = loop.run_until_complete(once())
        assert status == 200, status
        return status

    return call


async def probe(request: Request,
                label: Annotated[int | None, Query(ge=0, le=99)] = None,
                n: Annotated[int, Query(ge=1, le=256)] = 1,
                seed: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
                model: Annotated[str | None, Query(max_length=64)] = None,
                version: Annotated[str | None, Query(max_length=64)] = None,
                scale: Annotated[int, Query(ge=1, le=16)] = 1) -> Response:
    return Response(b"ok")


def query_app(route_class: type[APIRoute]) -> FastAPI:
    app = FastAPI()
    router = APIRouter(route_class=route_class)
    router.add_api_route("/sample", probe, methods=["GET"])
    app.include_router(router)
    return app


async def read_body(request: Request) -> Response:
    return Response(str(len(await request.body())).encode())


async def read_form(request: Request) -> Response:
    form = await request.form()
    return Response(str(len([v for v in form.values() if hasattr(v, "read")])).encode())


async def read_multipart(request: Request) -> Response:
    files = multipart_files(await request.body(), request.headers["content-type"])
    return Response(str(len(files)).encode())


def body_app(limit_ours: bool, endpoint=read_body) -> FastAPI:
    app = FastAPI() if limit_ours else FastAPI(max_body_size=4 << 20)
    if limit_ours:
        app.add_middleware(BodySizeLimit, limit=4 << 20)
    app.add_api_route("/classify", endpoint, methods=["POST"])
    return app


def digit_png() -> bytes:
    rng = np.random.default_rng(0)
    picture = (rng.random((28, 28)) > 0.8).astype(np.uint8) * 255
    return encode_png(picture)


def pillow_png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    calls, rounds = args.calls, args.rounds
    rows = []

    query = b"label=7&n=1&seed=3&model=mnist-semi-supervised&version=latest&scale=1"
    rows.append(compare("query parameters (/sample's six)",
                        asgi_call(query_app(QueryOnlyRoute), "GET", "/sample", query),
                        asgi_call(query_app(APIRoute), "GET", "/sample", query),
                        calls, rounds))

    rng = np.random.default_rng(0)
    small = (rng.random((28, 28)) * 255).astype(np.uint8)
    large = small.repeat(16, axis=0).repeat(16, axis=1)
    rows.append(compare("PNG 28x28", lambda: encode_png(small), lambda: pillow_png(small),
                        calls, rounds))
    rows.append(compare("PNG 448x448", lambda: encode_png(large), lambda: pillow_png(large),
                        max(1, calls // 20), rounds))
    grid = (rng.random((448, 448)) * 255).astype(np.uint8)  # 256 digits' worth
    rows.append(compare("PNG 448x448 at scale 16 (7168x7168)",
                        lambda: encode_png(grid, 16),
                        lambda: pillow_png(grid.repeat(16, axis=0).repeat(16, axis=1)),
                        max(1, calls // 1000), rounds))

    png = digit_png()
    boundary = b"----aae"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="d.png"\r\nContent-Type: image/png\r\n\r\n' + png + b"\r\n--"
            + boundary + b"--\r\n")
    headers = [(b"content-type", b"multipart/form-data; boundary=" + boundary),
               (b"content-length", str(len(body)).encode())]
    rows.append(compare("multipart upload of one digit",
                        asgi_call(body_app(True, read_multipart), "POST", "/classify",
                                  body=body, headers=headers),
                        asgi_call(body_app(True, read_form), "POST", "/classify",
                                  body=body, headers=headers),
                        calls, rounds))
    raw = [(b"content-type", b"image/png"), (b"content-length", str(len(png)).encode())]
    rows.append(compare("body size limit",
                        asgi_call(body_app(True), "POST", "/classify", body=png, headers=raw),
                        asgi_call(body_app(False), "POST", "/classify", body=png,
                                  headers=raw),
                        calls, rounds))

    print(f"median of {rounds} alternating rounds, microseconds per call\n")
    print("| piece | ours (us) | framework's (us) | framework / ours |")
    print("|---|---:|---:|---:|")
    for name, ours, theirs in rows:
        print(f"| {name} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
