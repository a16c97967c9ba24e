"""The OpenAPI document says what the server does: every status and content type each route
answers with is listed, and a schemathesis run against a real `bledger serve` (loopback) finds
no server error and no answer that departs from the document (status code, content type,
headers, body schema). Examples are bounded (`MAX_EXAMPLES` per operation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import LOG, Signer, envelope_body, post_entry, running_server

MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def ledger_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running server whose evidence log holds a few entries (so reads find something)."""
    base = tmp_path_factory.mktemp("openapi")
    signer = Signer.create(base / "keys")
    with running_server(base / "data", allow_keys=(signer.pub,)) as srv:
        for i in range(3):
            post_entry(srv.base_url, envelope_body(signer.envelope(f"openapi {i}")))
        yield srv.base_url


@pytest.fixture(scope="module")
def openapi_doc(ledger_url: str) -> dict[str, Any]:
    """The server's OpenAPI document."""
    doc: dict[str, Any] = httpx.get(f"{ledger_url}/openapi.json", timeout=60).json()
    return doc


@pytest.fixture(scope="module")
def api_schema(ledger_url: str) -> Any:
    """The document, loaded by schemathesis, pointed at the running server."""
    return schemathesis.openapi.from_url(f"{ledger_url}/openapi.json")


def _responses(doc: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    out: dict[str, Any] = doc["paths"][path][method]["responses"]
    return out


def test_content_types_are_the_served_ones(openapi_doc: dict[str, Any]) -> None:
    checkpoint = _responses(openapi_doc, "/logs/{name}/checkpoint")
    assert list(checkpoint["200"]["content"]) == ["text/plain"]
    tile = _responses(openapi_doc, "/logs/{name}/tile/{level}/{path}")
    assert list(tile["200"]["content"]) == ["application/octet-stream"]
    for r in (checkpoint, tile):
        assert list(r["404"]["content"]) == ["application/json"]


def test_every_status_the_routes_answer_is_listed(openapi_doc: dict[str, Any]) -> None:
    write = _responses(openapi_doc, "/logs/{name}/entries", "post")
    assert {"200", "202", "400", "401", "403", "404", "413", "422"} <= set(write)
    for path, ops in openapi_doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if "{name}" in path:
                assert "404" in codes, (method, path)
            assert "422" not in codes or path == "/logs/{name}/entries", (
                method,
                path,
                "FastAPI's 422 is never served: validation errors are 400",
            )


def test_a_validation_error_is_the_documented_400(ledger_url: str) -> None:
    r = httpx.get(f"{ledger_url}/logs/{LOG}/proof/inclusion?index=-1", timeout=60)
    assert r.status_code == 400
    assert set(r.json()) == {"error", "detail"}


def test_api_conforms_to_its_openapi_document(api_schema: Any) -> None:
    """Each operation, MAX_EXAMPLES generated requests (valid and invalid), all checks."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9, "positive control: every route was found"
    seen: set[int] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
        def conforms(case: Any) -> None:
            seen.add(case.call_and_validate(checks=CHECKS).status_code // 100)

        try:
            conforms()
        except BaseException as e:
            e.add_note(f"operation {operation.method.upper()} {operation.path}")
            raise
    assert seen == {2, 4}, f"positive control: answers of both kinds were checked, got {seen}"
