"""The API fuzzed from its own OpenAPI document, served at ``/openapi.json``.

Schemathesis draws requests from the document, sends them to a real hub process
and checks every answer: no 5xx, every body the documented object, ``List`` or
``Status``, and 401 without credentials. Watches stream until their timeout,
so the two watch routes are left out here (tests/test_watch_api.py covers them).

One check is left out: "schema-valid data is accepted". The document cannot
express the selector grammar or every rule of a valid object, so a request
that fits it may still get a 400 or 422 Status, which is the right answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import spawn_hub

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def hub_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A hub process with one token, and the OpenAPI document it serves."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "tokens.csv").write_text(f"{TOKEN},fuzzer,1,admins\n")
    proc = spawn_hub(
        folder,
        "--store",
        "memory",
        "--token-file",
        "tokens.csv",
        "--max-object-size",
        "65536",
        "--write-rate",
        "0",
    )
    try:
        schema = schemathesis.openapi.from_url(
            proc.url + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        schema.config.update(base_url=proc.url)
        yield schema
    finally:
        proc.process.kill()
        proc.process.wait()


def test_api_answers_every_request_as_documented(hub_schema: Any) -> None:
    """Every drawn request gets a documented answer: an object, a List or a Status."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    operations = list(hub_schema.exclude(path_regex="/watch/").get_all_operations())
    assert len(operations) == 10
    with requests.Session() as session:
        for result in operations:
            operation = result.ok()

            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                case.call_and_validate(
                    session=session,
                    headers=headers,
                    excluded_checks=[positive_data_acceptance],
                )

            check()


def test_openapi_document_lists_every_route() -> None:
    """The document names every REST and watch route of the API."""
    from hub.api.openapi import openapi_document

    paths = set(openapi_document()["paths"])
    assert {
        "/api/v1/{collection}",
        "/api/v1/{collection}/{name}",
        "/api/v1/watch/{collection}",
        "/api/v1/watch/{collection}/{name}",
    } <= paths
