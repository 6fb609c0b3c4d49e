"""OpenAPI fuzzing (schemathesis) of the whole app, token included: no input may produce a 5xx."""
import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from freshrec.db import get_engine
from freshrec.registry import promote
from freshrec.serving import create_app

TOKEN = {"Authorization": "Bearer freshrec-dev-token"}


@pytest.fixture(scope="module")
def app(served_url):
    from conftest import use_database

    use_database(served_url)
    application = create_app(watch=False)
    with TestClient(application):  # runs the lifespan: Feast store, current version
        yield application
    with get_engine().connect() as conn:  # fuzzed promotions may have moved the pointer
        current = conn.execute(sa.text("SELECT version FROM current_version")).scalar()
    if current != 2:
        promote(get_engine(), 2, reason="restore after fuzzing")


def test_no_input_makes_a_server_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "25")), deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case):
            response = case.call(headers=TOKEN)
            assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body, response.text)

        no_server_error()
