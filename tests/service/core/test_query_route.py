"""``QueryOnlyRoute`` answers exactly as FastAPI's own route does, faster: the same
endpoint mounted both ways gets the same query strings, good and bad."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.core import errors
from service.core.query_route import QueryOnlyRoute, query_model
from service.routes import inference


async def probe(request: Request,
                label: Annotated[int | None, Query(ge=0, le=99)] = None,
                n: Annotated[int, Query(ge=1, le=256)] = 1,
                seed: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
                model: Annotated[str | None, Query(max_length=8)] = None,
                scale: Annotated[float, Query(gt=0)] = 1.0) -> Response:
    return Response(repr((request.url.path, label, n, seed, model, scale)).encode())


def client(route_class: type[APIRoute]) -> TestClient:
    app = FastAPI()
    errors.install(app)
    router = APIRouter(route_class=route_class)
    router.add_api_route("/probe", probe, methods=["GET"])
    app.include_router(router)
    return TestClient(app)


@pytest.mark.parametrize("query", [
    "", "label=7", "label=7&n=16&seed=1", "n=3&n=4", "label=100", "label=-1", "n=0",
    "n=257", "n=abc", "label=7.5", "seed=99999999999999999999", "model=123456789",
    "model=ok&label=x&n=0", "scale=0", "scale=nan", "scale=1e3", "unknown=1", "label=",
    "label=%20", "n=1_0", "label=0x7",
])
def test_the_fast_route_answers_as_fastapis_own(query):
    fast, plain = client(QueryOnlyRoute), client(APIRoute)
    a, b = fast.get(f"/probe?{query}"), plain.get(f"/probe?{query}")
    assert (a.status_code, a.headers.get("content-type"), a.json() if a.status_code == 422
            else a.text) == (b.status_code, b.headers.get("content-type"),
                             b.json() if b.status_code == 422 else b.text)


def test_routes_that_take_more_than_queries_are_left_to_fastapi():
    async def with_body(request: Request, body: dict) -> Response: ...
    async def with_dependency(request: Request,
                              n: Annotated[int, Depends(lambda: 1)]) -> Response: ...
    async def without_request(n: Annotated[int, Query()] = 1) -> Response: ...
    for endpoint in (with_body, with_dependency, without_request):
        assert query_model(endpoint) is None
    fast = {route.path for route in inference.router.routes
            if query_model(route.endpoint) is not None}
    assert fast == {"/encode", "/classify", "/reconstruct", "/sample"}
