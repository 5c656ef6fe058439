"""The OpenAPI document: generated from the route table, served, and fuzzed.

schemathesis generates requests from ``/v1/openapi.json`` for every operation (valid
ones, with a real secret key) and checks each answer: no 5xx, a documented status code,
the documented content type and headers, and a body matching the documented schema.
The number of examples per operation is bounded so the whole run takes seconds.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from gateway.api import ROUTES
from gateway.api.routes import openapi_document
from tests.api.conftest import Account, ApiServer

EXAMPLES_PER_OPERATION = 12
NEGATIVE_EXAMPLES = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="session")
def fuzz_account(server: ApiServer) -> Account:
    """The tenant schemathesis acts as (its data is whatever the fuzzer creates)."""
    return server.account("fuzz")


SCHEMA = schemathesis.openapi.from_dict(openapi_document(ROUTES))
"""The document, built at collection time (a test below checks the served one equals it)."""


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        (route.method, route.path, mode)
        for route in ROUTES
        for mode in GenerationMode
        # Negative data needs something to break: a body, a query or a path parameter.
        if mode is GenerationMode.POSITIVE
        or route.body is not None
        or route.query is not None
        or "{" in route.path
    ],
    ids=str,
)
def test_every_operation_conforms_and_never_5xx(
    server: ApiServer, fuzz_account: Account, method: str, path: str, mode: GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {fuzz_account.key}"}
    operation = SCHEMA[path][method]
    examples = EXAMPLES_PER_OPERATION if mode is GenerationMode.POSITIVE else NEGATIVE_EXAMPLES

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(base_url=server.v1, headers=headers, checks=CHECKS)

    check()


def test_the_checks_catch_an_answer_that_breaks_the_document(
    server: ApiServer, fuzz_account: Account
) -> None:
    # A real answer of GET /numbers, judged as if it were GET /billing/balance's: the
    # schema check must fail, or the fuzz test above would prove nothing.
    headers = {"Authorization": f"Bearer {fuzz_account.key}"}
    response = requests.get(f"{server.v1}/numbers", headers=headers, timeout=5)
    case = SCHEMA["/billing/balance"]["GET"].Case()
    with pytest.raises(FailureGroup) as caught:
        case.validate_response(response, checks=[response_schema_conformance])
    assert [type(e).__name__ for e in caught.value.exceptions] == ["JsonSchemaError"]


def test_served_document_is_the_generated_one(server: ApiServer) -> None:
    served = requests.get(f"{server.v1}/openapi.json", timeout=5).json()
    assert served == openapi_document(ROUTES)


def test_document_lists_every_route_with_its_errors(server: ApiServer) -> None:
    document = requests.get(f"{server.v1}/openapi.json", timeout=5).json()
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert operations == {(route.method, route.path) for route in ROUTES}
    connect = document["paths"]["/telephony/connect"]["post"]
    assert set(connect["responses"]) == {"200", "400", "401", "413", "429", "500", "502", "503"}
    assert connect["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CarrierCredentialsIn"
    }
    assert "Retry-After" in connect["responses"]["429"]["headers"]
    providers = document["paths"]["/telephony/providers"]["get"]
    assert providers["security"] == []
    register = document["paths"]["/numbers"]["post"]["responses"]
    assert {"200", "201", "409"} <= set(register)
    agent = document["components"]["schemas"]["AgentWrite"]["properties"]
    assert set(agent) == {"name", "agent_role", "advanced", "pipeline", "barge_in"}
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error", "code"]
