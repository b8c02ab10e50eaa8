"""The REST table of PROTOCOL.md, over a real socket."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .conftest import RunningHub

MERGE = {"Content-Type": "application/merge-patch+json"}


def pod(name: str, **fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app": "web"}}, **fields}


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None)


def assert_status(body: Any, code: int, reason: str) -> None:
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert body["reason"] == reason
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)


async def test_create_returns_stored_object(served: RunningHub, http) -> None:
    """POST stores the object with the metadata the server owns."""
    status, body = await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    assert status == 201
    meta = body["metadata"]
    assert meta["name"] == "a" and meta["labels"] == {"app": "web"}
    assert meta["resourceVersion"] == "1"
    assert meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")


async def test_create_existing_is_already_exists(served: RunningHub, http) -> None:
    """A second POST of the same name is 409 AlreadyExists."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    status, body = await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    assert status == 409
    assert_status(body, 409, "AlreadyExists")
    assert body["details"] == {"name": "a", "kind": "pods"}


async def test_list_has_items_and_version(served: RunningHub, http) -> None:
    """GET on a collection is a List at the hub's resourceVersion."""
    for name in ("a", "b", "c"):
        await call(http, "POST", f"{served.url}/api/v1/pods", json=pod(name))
    await call(http, "POST", f"{served.url}/api/v1/services", json=pod("s"))
    status, body = await call(http, "GET", f"{served.url}/api/v1/pods")
    assert status == 200
    assert body["kind"] == "List"
    assert body["metadata"]["resourceVersion"] == "4"
    assert sorted(item["metadata"]["name"] for item in body["items"]) == ["a", "b", "c"]


async def test_list_of_unwritten_collection_is_empty(served: RunningHub, http) -> None:
    """A collection nobody wrote to lists as empty."""
    status, body = await call(http, "GET", f"{served.url}/api/v1/nothing")
    assert status == 200 and body["items"] == []


async def test_list_bad_selector_is_bad_request(served: RunningHub, http) -> None:
    """A malformed label selector on a list is 400 BadRequest."""
    url = f"{served.url}/api/v1/pods?labelSelector=a%20in%20(b"
    status, body = await call(http, "GET", url)
    assert status == 400
    assert_status(body, 400, "BadRequest")


async def test_get_object_and_missing(served: RunningHub, http) -> None:
    """GET returns the object, or 404 NotFound."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a", spec={"x": 1}))
    status, body = await call(http, "GET", f"{served.url}/api/v1/pods/a")
    assert status == 200 and body["spec"] == {"x": 1}
    status, body = await call(http, "GET", f"{served.url}/api/v1/pods/zz")
    assert status == 404
    assert_status(body, 404, "NotFound")
    assert body["details"]["name"] == "zz"


async def test_put_replaces_and_checks_version(served: RunningHub, http) -> None:
    """PUT replaces; a stale resourceVersion in the body is 409 Conflict."""
    _, created = await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    new = pod("a", spec={"v": 2})
    status, body = await call(http, "PUT", f"{served.url}/api/v1/pods/a", json=new)
    assert status == 200
    assert body["spec"] == {"v": 2}
    assert body["metadata"]["resourceVersion"] == "2"
    assert body["metadata"]["generation"] == 2
    assert body["metadata"]["uid"] == created["metadata"]["uid"]

    stale = pod("a", spec={"v": 3})
    stale["metadata"]["resourceVersion"] = "1"
    status, body = await call(http, "PUT", f"{served.url}/api/v1/pods/a", json=stale)
    assert status == 409
    assert_status(body, 409, "Conflict")

    fresh = pod("a", spec={"v": 3})
    fresh["metadata"]["resourceVersion"] = "2"
    status, body = await call(http, "PUT", f"{served.url}/api/v1/pods/a", json=fresh)
    assert status == 200 and body["metadata"]["resourceVersion"] == "3"


async def test_put_missing_is_not_found(served: RunningHub, http) -> None:
    """PUT to a name that does not exist is 404."""
    status, body = await call(http, "PUT", f"{served.url}/api/v1/pods/a", json=pod("a"))
    assert status == 404
    assert_status(body, 404, "NotFound")


async def test_put_invalid_body_is_invalid(served: RunningHub, http) -> None:
    """PUT with a body whose metadata is wrong is 422."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    bad = {"metadata": {"name": "a", "labels": {"x": 1}}}
    status, body = await call(http, "PUT", f"{served.url}/api/v1/pods/a", json=bad)
    assert status == 422
    assert_status(body, 422, "Invalid")


async def test_patch_merges(served: RunningHub, http) -> None:
    """PATCH applies a JSON merge patch: null removes, objects merge."""
    obj = pod("a", spec={"keep": 1, "drop": 2, "nested": {"x": 1}})
    await call(http, "POST", f"{served.url}/api/v1/pods", json=obj)
    patch = {"spec": {"drop": None, "nested": {"y": 2}}, "metadata": {"labels": None}}
    status, body = await call(
        http, "PATCH", f"{served.url}/api/v1/pods/a", json=patch, headers=MERGE
    )
    assert status == 200
    assert body["spec"] == {"keep": 1, "nested": {"x": 1, "y": 2}}
    assert "labels" not in body["metadata"]
    assert body["metadata"]["resourceVersion"] == "2"


async def test_patch_failures(served: RunningHub, http) -> None:
    """PATCH: 404 missing, 409 stale version, 415 other types, 422 bad result."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    url = f"{served.url}/api/v1/pods"
    status, body = await call(http, "PATCH", f"{url}/zz", json={}, headers=MERGE)
    assert status == 404
    assert_status(body, 404, "NotFound")
    stale = {"metadata": {"resourceVersion": "99"}}
    status, body = await call(http, "PATCH", f"{url}/a", json=stale, headers=MERGE)
    assert status == 409
    assert_status(body, 409, "Conflict")
    json_patch = {"Content-Type": "application/json-patch+json"}
    status, body = await call(http, "PATCH", f"{url}/a", data=b"[]", headers=json_patch)
    assert status == 415
    assert_status(body, 415, "UnsupportedMediaType")
    bad = {"metadata": {"labels": {"x": 5}}}
    status, body = await call(http, "PATCH", f"{url}/a", json=bad, headers=MERGE)
    assert status == 422
    assert_status(body, 422, "Invalid")


async def test_delete_returns_last_state(served: RunningHub, http) -> None:
    """DELETE answers with the object's last state, then it is gone."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a", spec={"x": 1}))
    status, body = await call(http, "DELETE", f"{served.url}/api/v1/pods/a")
    assert status == 200
    assert body["spec"] == {"x": 1}
    assert body["metadata"]["resourceVersion"] == "2"
    status, body = await call(http, "GET", f"{served.url}/api/v1/pods/a")
    assert status == 404


async def test_delete_failures(served: RunningHub, http) -> None:
    """DELETE: 404 missing, 409 on a stale resourceVersion precondition."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    status, body = await call(http, "DELETE", f"{served.url}/api/v1/pods/zz")
    assert status == 404
    assert_status(body, 404, "NotFound")
    url = f"{served.url}/api/v1/pods/a?resourceVersion=7"
    status, body = await call(http, "DELETE", url)
    assert status == 409
    assert_status(body, 409, "Conflict")
    status, body = await call(
        http, "DELETE", f"{served.url}/api/v1/pods/a?resourceVersion=1"
    )
    assert status == 200


async def test_oversized_body_is_too_large(http) -> None:
    """A body above the configured limit is 413, an object above its limit too."""
    from hub import Hub, HubConfig
    from hub.api import ServerConfig

    from .conftest import start_hub

    running = await start_hub(
        Hub(config=HubConfig(max_object_size=2000)), ServerConfig(max_body_size=10_000)
    )
    try:
        url = f"{running.url}/api/v1/pods"
        big = pod("a", data="x" * 20_000)
        status, body = await call(http, "POST", url, json=big)
        assert status == 413
        assert_status(body, 413, "RequestEntityTooLarge")
        medium = pod("a", data="x" * 5_000)
        status, body = await call(http, "POST", url, json=medium)
        assert status == 413
        assert_status(body, 413, "RequestEntityTooLarge")
        status, body = await call(http, "GET", url)
        assert body["items"] == []
    finally:
        await running.runner.cleanup()


BAD_BODIES = [
    pytest.param(b"{not json", 422, id="malformed-json"),
    pytest.param(b"", 422, id="empty"),
    pytest.param(b"[1, 2]", 422, id="array"),
    pytest.param(b'"text"', 422, id="string"),
    pytest.param(b"{}", 422, id="no-metadata"),
    pytest.param(b'{"metadata": []}', 422, id="metadata-array"),
    pytest.param(b'{"metadata": {"name": 5}}', 422, id="name-number"),
    pytest.param(b'{"metadata": {"name": "Upper"}}', 422, id="name-uppercase"),
    pytest.param(b'{"metadata": {"name": "a_b"}}', 422, id="name-underscore"),
    pytest.param(b'{"metadata": {"name": "-a"}}', 422, id="name-leading-dash"),
    pytest.param(b'{"metadata": {"name": "' + b"a" * 254 + b'"}}', 422, id="name-long"),
    pytest.param(
        b'{"metadata": {"name": "a", "labels": ["x"]}}', 422, id="labels-list"
    ),
    pytest.param(
        b'{"metadata": {"name": "a", "labels": {"k": 1}}}', 422, id="label-int"
    ),
    pytest.param(
        b'{"metadata": {"name": "a", "resourceVersion": "abc"}}', 422, id="rv-text"
    ),
    pytest.param(
        b'{"metadata": {"name": "a"}, "n": 123456789012345678901234567890}',
        422,
        id="int-beyond-64-bits",
    ),
]


@pytest.mark.parametrize(("data", "code"), BAD_BODIES)
async def test_bad_input_leaves_data_unchanged(
    served: RunningHub, http, data: bytes, code: int
) -> None:
    """Each bad body gets a 4xx Status and the stored data stays as it was."""
    url = f"{served.url}/api/v1/pods"
    await call(http, "POST", url, json=pod("keep", spec={"v": 1}))
    _, before = await call(http, "GET", url)
    headers = {"Content-Type": "application/json"}
    status, body = await call(http, "POST", url, data=data, headers=headers)
    assert status == code
    assert_status(body, code, "Invalid")
    status, body = await call(http, "PUT", f"{url}/keep", data=data, headers=headers)
    assert 400 <= status < 500
    assert body["kind"] == "Status"
    _, after = await call(http, "GET", url)
    assert after == before


async def test_bad_collection_name_is_invalid(served: RunningHub, http) -> None:
    """A collection name out of pattern is 422 Invalid."""
    status, body = await call(http, "POST", f"{served.url}/api/v1/Pods", json=pod("a"))
    assert status == 422
    assert_status(body, 422, "Invalid")


async def test_non_numeric_resource_version_is_rejected(
    served: RunningHub, http
) -> None:
    """A resourceVersion that is not a number is a 4xx Status everywhere."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    status, body = await call(
        http, "DELETE", f"{served.url}/api/v1/pods/a?resourceVersion=x1"
    )
    assert status == 400
    assert_status(body, 400, "BadRequest")
    status, body = await call(
        http, "GET", f"{served.url}/api/v1/watch/pods?resourceVersion=abc"
    )
    assert status == 400
    assert_status(body, 400, "BadRequest")
    _, listed = await call(http, "GET", f"{served.url}/api/v1/pods")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["a"]


async def test_name_mismatch_on_put_is_bad_request(served: RunningHub, http) -> None:
    """PUT whose body names another object is 400, and nothing changes."""
    await call(http, "POST", f"{served.url}/api/v1/pods", json=pod("a"))
    status, body = await call(http, "PUT", f"{served.url}/api/v1/pods/a", json=pod("b"))
    assert status == 400
    assert_status(body, 400, "BadRequest")


async def test_unknown_route_and_method_are_status(served: RunningHub, http) -> None:
    """Unknown paths are 404 and wrong methods 405, both as Status bodies."""
    status, body = await call(http, "GET", f"{served.url}/nope")
    assert status == 404 and body["kind"] == "Status"
    status, body = await call(http, "POST", f"{served.url}/api/v1/pods/a")
    assert status == 405 and body["kind"] == "Status"


async def test_object_at_the_size_limit_can_be_written_back(http) -> None:
    """The metadata the hub adds does not push a stored object over the limit."""
    from hub import Hub, HubConfig

    from .conftest import start_hub

    limit = 5000
    running = await start_hub(Hub(config=HubConfig(max_object_size=limit)))
    try:
        url = f"{running.url}/api/v1/pods"
        base = len(b'{"metadata":{"name":"a"},"data":""}')
        body = {"metadata": {"name": "a"}, "data": "x" * (limit - base)}
        status, stored = await call(http, "POST", url, json=body)
        assert status == 201
        status, _ = await call(http, "PUT", f"{url}/a", json=stored)
        assert status == 200
        same_size = {"data": "y" * (limit - base)}
        status, _ = await call(http, "PATCH", f"{url}/a", json=same_size, headers=MERGE)
        assert status == 200
        body["data"] += "x"
        status, _ = await call(http, "PUT", f"{url}/a", json=body)
        assert status == 413
    finally:
        await running.runner.cleanup()
