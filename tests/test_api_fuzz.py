"""schemathesis against the live OpenAPI document, on SQLite and PostGIS: whatever a client
sends within (or around) the schema, the server never answers with a server error and never
shows a stack trace.

The server is a real uvicorn on a loopback port serving a store holding the reference
district; requests carry an admin token, so every route is exercised past its auth checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from live_server import serve
from schemathesis import GenerationMode

from api.app import create_app
from gridgov import store


@pytest.fixture(scope="module")
def live_api(reference_store_url: str) -> Iterator[tuple[str, str]]:
    engine = store.open_store(reference_store_url)
    _, token = store.issue_credential(engine, "admin", label="schemathesis")
    with serve(create_app(engine=engine)) as base:
        yield base, token
    engine.dispose()


#: Operations left to their own tests: the pushed feed answers for as long as it is asked to
#: (``max_seconds``, up to an hour), which is not a request a fuzzer can wait for
#: (tests/test_live_stream.py and the role matrix cover it).
STREAMING = {"GET /api/v1/live/stream"}


def _operations(base: str) -> list[Any]:
    loaded = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in loaded.get_all_operations()]
    return [o for o in operations if o.label not in STREAMING]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(live_api: tuple[str, str], mode: GenerationMode) -> None:
    """Every operation of the live schema, with valid (positive) and invalid (negative) data."""
    base, token = live_api
    operations = _operations(base)
    assert len(operations) >= 14
    failures: list[str] = []
    answered: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"})
            answered[response.status_code // 100 * 100] += 1
            if response.status_code >= 500 or "Traceback" in response.text:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200} "
                    f"-> {response.status_code} {response.text[:300]}"
                )

        try:
            run()
        except Unsatisfiable:
            # No invalid request exists for it (a GET without parameters): nothing to send.
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert failures == []
    # The data reached the routes: some valid data was accepted (much of it is refused on
    # domain grounds: random points lie outside the district), and invalid data refused.
    if mode is GenerationMode.POSITIVE:
        assert answered[200] > 0, answered
    else:
        assert answered[400] > 0, answered
