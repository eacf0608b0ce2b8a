"""Property-based tests of the HTTP API against its own OpenAPI document (Schemathesis, in process).

Requests generated from the schema, valid and invalid, must never produce a 5xx, and every response must be
one the document declares, in the declared shape (errors included). The question endpoints run the real
model, so they get few examples; the rest get more.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.server import create_app
from tests.agent_data import build_agent_data
from tests.test_server import server_settings

KEY = "schema-test-key"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
QUESTION_PATHS = "^/(ask|chat|v1/chat/completions)$"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    data_dir = build_agent_data(tmp_path_factory.mktemp("schema") / "data")
    application = create_app(server_settings(data_dir, api_key=KEY, max_upload_mb=0.05))
    yield application
    application.state.service.close()


def check_operations(app: object, questions: bool, examples: int) -> list[str]:
    """Run generated cases for the question endpoints or for the rest; returns the operations checked."""
    import re

    from hypothesis import given

    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Questions come without a key; everything else with it, so that the writes are exercised too.
    headers = {} if questions else {"X-API-Key": KEY}
    checked = []
    for result in api.get_all_operations():
        operation = result.ok()
        if bool(re.match(QUESTION_PATHS, operation.path)) != questions:
            continue

        @given(case=operation.as_strategy())
        # Derandomised: CI and a developer's machine try the same cases, so a failure reproduces.
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def run(case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        run()
        checked.append(f"{operation.method.upper()} {operation.path}")
    return checked


def test_api_conforms_to_its_schema(app: object) -> None:
    checked = check_operations(app, questions=False, examples=25)
    assert {"POST /ingest", "DELETE /documents/{doc_id}", "GET /status"} <= set(checked)


def test_question_endpoints_conform_to_their_schema(app: object) -> None:
    checked = check_operations(app, questions=True, examples=6)
    assert set(checked) == {"POST /ask", "POST /chat", "POST /v1/chat/completions"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat", {"message": "Who directed Kerrow Lighthouse?"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Who wrote it?"}], "stream": True}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Who wrote it?"}]}),
    ],
)
def test_streamed_and_plain_answers_have_declared_content_types(app: object, path: str, body: dict) -> None:
    """Generated bodies may or may not ask for a stream; these cases always cover both media types."""
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = api[path]["POST"]
    response = operation.Case(body=body, media_type="application/json").call_and_validate(checks=CHECKS)
    expected = "text/event-stream" if path == "/chat" or body.get("stream") else "application/json"
    assert response.headers["content-type"][0].startswith(expected)


def test_openapi_document_declares_the_error_shape(app: object) -> None:
    from fastapi.testclient import TestClient

    spec = TestClient(app).get("/openapi.json").json()
    ask = spec["paths"]["/ask"]["post"]["responses"]
    assert {"400", "422", "429", "500"} <= set(ask)
    assert ask["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    body = spec["paths"]["/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$defs" not in str(body) and body["properties"]["triples"]["items"]["required"] == [
        "head",
        "relation",
        "tail",
    ]
