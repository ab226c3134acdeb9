"""`GET /openapi.json`: a valid OpenAPI 3.1 document (openapi-spec-validator) that matches the app's actual routes,
both ways: every documented operation is served, and every plain HTTP API route is documented."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Route

from koe.engines.registry import Engines
from tests.server.acs.support import koe_server
from tests.server.openai.support import api_settings

API_PREFIXES = ("/v1/", "/acs/", "/healthz", "/metrics", "/openapi.json")
"""Routes outside these are the browser pages and their static files, which are not an API."""
METHODS = {"get", "post", "put", "patch", "delete", "options", "head"}


@pytest.fixture(scope="module")
async def served(engines: Engines) -> AsyncIterator[tuple[str, Starlette]]:
    async with koe_server(api_settings(), engines) as (base, app):
        yield base, app


def _app_operations(app: Starlette) -> set[tuple[str, str]]:
    operations: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith(API_PREFIXES):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # Starlette's {name:converter} is OpenAPI's {name}
            operations |= {(path, method.lower()) for method in route.methods or () if method != "HEAD"}
    return operations


async def test_the_document_is_valid_openapi_3_1_and_matches_the_routes(served: tuple[str, Starlette]) -> None:
    base, app = served
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    documented = {(path, method) for path, item in document["paths"].items() for method in item if method in METHODS}
    served_operations = _app_operations(app)
    assert documented - served_operations == set(), "documented but not served"
    assert served_operations - documented == set(), "served but not documented"
    for required in (
        "/healthz",
        "/v1/models",
        "/v1/audio/transcriptions",
        "/v1/audio/speech",
        "/v1/chat/completions",
        "/v1/calls",
        "/v1/calls/{call_id}",
        "/v1/calls/{call_id}/events",
        "/acs/events",
        "/metrics",
    ):
        assert required in document["paths"], required
    # Path parameters are declared where a path has them, as the validator alone does not insist on.
    for path, item in document["paths"].items():
        for method, operation in item.items():
            names = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
            assert names == set(re.findall(r"\{(\w+)\}", path)), (path, method)
