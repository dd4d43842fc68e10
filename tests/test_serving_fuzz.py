"""Schema fuzzing: schemathesis generates requests from our OpenAPI document (valid and invalid by the
schema) against a real OCR server; no answer may be a 5xx, and every answer must match the document.

Hypothesis is driven directly (schemathesis' pytest plugin doesn't run under pytest 9), a bounded
number of examples per operation and generation mode.
"""

from __future__ import annotations

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

import hpinfer
from hpinfer.serving import ServeSettings, create_app
from test_serving_support import running

EXAMPLES = 40  # per operation and mode


@pytest.fixture(scope="module")
def served():
    with hpinfer.create_pipeline("OCR") as pipeline, running(create_app(ServeSettings(max_body_mb=1), pipeline)) as url:
        yield url, schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_no_server_errors(served, mode):
    url, schema = served
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/ocr", "/health", "/health/ready"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.body:
            continue  # nothing to make invalid in a GET without parameters

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def check(case):
            case.call_and_validate(
                base_url=url, timeout=60,
                checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
            )

        check()
    answered = sum(
        float(line.rsplit(" ", 1)[1]) for line in httpx.get(f"{url}/metrics").text.splitlines()
        if line.startswith('hpinfer_requests_total{endpoint="/ocr"')
    )
    assert answered >= EXAMPLES / 2, f"only {answered} fuzz requests reached /ocr"
