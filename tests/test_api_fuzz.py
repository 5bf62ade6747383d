"""Property-based fuzzing of the REST API from its own OpenAPI schema: no 5xx, every answer as documented."""

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation import GenerationMode

from tests.support.fuzz import CHECKS, OPERATIONS, RUNS

# Per operation and mode (19 runs today): 30 examples each keep the run around a minute on two cores.
EXAMPLES = 30


def test_the_fuzzed_operations_are_all_of_the_api(api_schema):
    assert {(result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()} == \
        set(OPERATIONS)


@pytest.mark.parametrize("method, path, mode", RUNS, ids=[f"{m} {p} {mode.value}" for m, p, mode in RUNS])
def test_fuzz_no_server_error_and_answers_conform(api_schema, method, path, mode):
    operation = api_schema[path][method]
    extra = [checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def answers_as_documented(case):
        case.validate_response(case.call(), checks=CHECKS + extra)

    answers_as_documented()
