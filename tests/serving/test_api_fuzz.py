"""Schemathesis against the service's own OpenAPI schema: no generated request gets a 5xx answer.

Requests carry a key with every scope, so generated input reaches the handlers (not just the 401
path). Both valid (positive) and schema-violating (negative) inputs are generated. Bounded: a few dozen
examples per operation and mode. Schemathesis' pytest plugin does not run under
this project's pytest, so the test drives its Hypothesis strategies directly.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from behaviorlm.config import ServiceConfig
from behaviorlm.serving.app import create_app

schemathesis = pytest.importorskip("schemathesis")


def test_no_generated_request_gets_a_server_error(deployment) -> None:
    config = ServiceConfig(
        store=deployment["store"], model=deployment["model"], keys_file=deployment["keys_file"]
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(config))
    headers = {"X-API-Key": deployment["keys"]["all"]}
    tested = []
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in ((op, mode) for op in operations for mode in modes):

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            )

        try:
            no_server_error()
        except Unsatisfiable:
            continue  # an operation without inputs has no schema-violating variant
        tested.append(f"{operation.label} ({mode.value})")
    assert "POST /v1/events (negative)" in tested, tested
    assert "GET /v1/users/{user_id}/recommendations (negative)" in tested, tested
    assert "GET /v1/users/{user_id}/profile (negative)" in tested, tested
    assert "GET /v1/segments/map (negative)" in tested, tested
