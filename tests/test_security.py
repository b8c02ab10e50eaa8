"""Authentication, authorization, origins, limits and TLS, over real sockets."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect

from hub import Hub
from hub.api import ServerConfig
from hub.api.security import GUARD_KEY
from hub.store import MemoryStore

from .conftest import TIMEOUT, RunningHub, eventually, read_lines, spawn_hub, start_hub

TOKENS = """\
# token,user,uid,groups
admin-token,admin,1,"admins"
alice-token,alice,2,"readers,staff"
bob-token,bob,3
"""

RULES = {
    "rules": [
        {"groups": ["admins"], "collections": ["*"], "verbs": ["*"]},
        {
            "groups": ["readers"],
            "collections": ["public"],
            "verbs": ["get", "list", "watch"],
        },
        {"users": ["bob"], "collections": ["bobs"], "verbs": ["*"]},
        {
            "groups": ["system:unauthenticated"],
            "collections": ["open"],
            "verbs": ["list"],
        },
    ]
}

SECRET = b"a-shared-secret-of-at-least-32-bytes!!"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with a token file, a rules file and an HS256 key."""
    (tmp_path / "tokens.csv").write_text(TOKENS)
    (tmp_path / "rules.json").write_bytes(orjson.dumps(RULES))
    (tmp_path / "jwt.key").write_bytes(SECRET + b"\n")
    return tmp_path


async def guarded(files: Path, **config: Any) -> RunningHub:
    settings: dict[str, Any] = {
        "token_file": str(files / "tokens.csv"),
        "rules_file": str(files / "rules.json"),
        "jwt_key_file": str(files / "jwt.key"),
        **config,
    }
    return await start_hub(Hub(MemoryStore()), ServerConfig(**settings))


@pytest.fixture
async def secured(files: Path) -> AsyncIterator[RunningHub]:
    """A hub with tokens, JWTs and rules, and nothing anonymous."""
    running = await guarded(files)
    yield running
    await running.runner.cleanup()


async def status_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = orjson.loads(await response.read())
    assert body["kind"] == "Status"
    assert body["code"] == response.status
    return body


EVERY_REQUEST = [
    ("GET", "/api/v1/public", None, {}),
    ("GET", "/api/v1/public?watch=true", None, {}),
    ("GET", "/api/v1/watch/public", None, {}),
    ("GET", "/api/v1/watch/public", None, {"Accept": "text/event-stream"}),
    ("GET", "/api/v1/public/a", None, {}),
    ("POST", "/api/v1/public", pod("a"), {}),
    ("PUT", "/api/v1/public/a", pod("a"), {}),
    ("PATCH", "/api/v1/public/a", {}, {"Content-Type": "application/merge-patch+json"}),
    ("DELETE", "/api/v1/public/a", None, {}),
    ("GET", "/api/v1/bad_name!", None, {}),
    ("GET", "/no/such/path", None, {}),
    ("GET", "/openapi.json", None, {}),
    ("GET", "/metrics", None, {}),
    ("GET", "/hubinfo", None, {}),
]


@pytest.mark.parametrize("credential", [None, "wrong-token", "Basic YTpi", "e.x.y"])
async def test_every_request_without_valid_credentials_gets_401(
    secured: RunningHub, http: aiohttp.ClientSession, credential: str | None
) -> None:
    """Missing, unknown, non-bearer and malformed credentials get a 401 Status."""
    await secured.hub.collection("public").create(pod("a"))
    for method, path, body, headers in EVERY_REQUEST:
        headers = dict(headers)
        if credential is not None:
            headers["Authorization"] = (
                credential if credential.startswith("Basic") else f"Bearer {credential}"
            )
        data = orjson.dumps(body) if body is not None else None
        async with http.request(
            method, secured.url + path, data=data, headers=headers
        ) as response:
            assert response.status == 401, (method, path)
            assert (await status_of(response))["reason"] == "Unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert len((await secured.hub.collection("public").list())["items"]) == 1


async def test_websocket_without_credentials_is_refused(secured: RunningHub) -> None:
    """A WebSocket handshake without a token is answered 401, not upgraded."""
    with pytest.raises(Exception) as caught:
        async with connect(f"{secured.ws_url}/api/v1/watch/public"):
            pass
    assert "401" in str(caught.value)


async def test_health_needs_no_credentials(
    secured: RunningHub, http: aiohttp.ClientSession
) -> None:
    """Liveness answers without credentials."""
    async with http.get(secured.url + "/healthz") as response:
        assert response.status == 200


async def test_valid_token_is_served_by_its_rules(
    secured: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A token's user may do what its rules allow, and gets 403 for the rest."""
    url = secured.url + "/api/v1"
    async with http.post(
        f"{url}/public", json=pod("a"), headers=bearer("admin-token")
    ) as r:
        assert r.status == 201
    async with http.get(f"{url}/public/a", headers=bearer("alice-token")) as r:
        assert r.status == 200
    async with http.post(
        f"{url}/public", json=pod("b"), headers=bearer("alice-token")
    ) as r:
        assert r.status == 403
        status = await status_of(r)
        assert status["reason"] == "Forbidden"
        assert status["message"] == 'user "alice" cannot create collection "public"'
    async with http.get(f"{url}/secret", headers=bearer("alice-token")) as r:
        assert r.status == 403
    async with http.get(f"{url}/watch/secret", headers=bearer("alice-token")) as r:
        assert r.status == 403
    async with http.delete(f"{url}/bobs/x", headers=bearer("bob-token")) as r:
        assert r.status == 404  # allowed, and there is no such object
    async with http.get(f"{url}/public", headers=bearer("bob-token")) as r:
        assert r.status == 403


async def test_watcher_never_sees_a_collection_it_may_not_watch(
    secured: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A reader watching what it may sees its collection's events and no other's."""
    async with http.get(
        secured.url + "/api/v1/watch/public?resourceVersion=0",
        headers=bearer("alice-token"),
    ) as response:
        assert response.status == 200
        for i in range(5):
            await secured.hub.collection("secret").create(pod(f"s{i}"))
            await secured.hub.collection("public").create(pod(f"p{i}"))
        events = await read_lines(response, 5)
    assert [e["object"]["metadata"]["name"] for e in events] == [
        f"p{i}" for i in range(5)
    ]


async def test_access_token_query_is_taken_for_watches_only(
    secured: RunningHub, http: aiohttp.ClientSession
) -> None:
    """Browsers' watches (WebSocket, SSE) may pass ?access_token=; REST may not."""
    await secured.hub.collection("public").create(pod("a"))
    query = "access_token=alice-token&resourceVersion=0"
    async with connect(f"{secured.ws_url}/api/v1/watch/public?{query}") as ws:
        event = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert event["object"]["metadata"]["name"] == "a"
    async with http.get(
        f"{secured.url}/api/v1/watch/public?{query}",
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
    async with http.get(f"{secured.url}/api/v1/public?access_token=alice-token") as r:
        assert r.status == 401


def make_jwt(key: Any, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "carol", "aud": "watchhub", "exp": now + 60, "groups": ["admins"]}
    payload.update(claims)
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, key, algorithm
    )


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({}, 200),
        ({"exp": int(time.time()) - 10}, 401),
        ({"aud": "another-service"}, 401),
        ({"exp": None}, 401),
        ({"aud": None}, 401),
        ({"groups": ["nobody"]}, 403),
    ],
)
async def test_hs256_jwt_is_checked(
    secured: RunningHub,
    http: aiohttp.ClientSession,
    claims: dict[str, Any],
    status: int,
) -> None:
    """An HS256 JWT passes with a good signature, expiry and audience only."""
    token = make_jwt(SECRET, **claims)
    async with http.get(secured.url + "/api/v1/public", headers=bearer(token)) as r:
        assert r.status == status
        if status != 200:
            await status_of(r)


async def test_jwt_signed_with_another_key_is_refused(
    secured: RunningHub, http: aiohttp.ClientSession
) -> None:
    """A JWT with a bad signature gets 401."""
    token = make_jwt(b"another-secret-of-at-least-32-bytes-long")
    async with http.get(secured.url + "/api/v1/public", headers=bearer(token)) as r:
        assert r.status == 401
        assert "signature" in (await status_of(r))["message"]


async def test_rs256_jwt_is_checked_with_the_public_key(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """An RS256 JWT is checked against a PEM public key; an HS256 one is refused."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "public.pem").write_bytes(public_pem)
    running = await start_hub(
        Hub(MemoryStore()), ServerConfig(jwt_key_file=str(tmp_path / "public.pem"))
    )
    try:
        good = make_jwt(private, "RS256")
        async with http.get(running.url + "/api/v1/pods", headers=bearer(good)) as r:
            assert r.status == 200
        # The public key used as an HMAC secret: the algorithm-confusion attack.
        forged = make_jwt(b"x" * 32, "HS256")
        async with http.get(running.url + "/api/v1/pods", headers=bearer(forged)) as r:
            assert r.status == 401
    finally:
        await running.runner.cleanup()


async def test_anonymous_access_only_when_enabled(
    files: Path, http: aiohttp.ClientSession
) -> None:
    """With anonymous access on, a request without credentials gets its rules."""
    running = await guarded(files, anonymous=True)
    try:
        async with http.get(running.url + "/api/v1/open") as r:
            assert r.status == 200
        async with http.post(running.url + "/api/v1/open", json=pod("a")) as r:
            assert r.status == 403
        async with http.get(running.url + "/api/v1/open", headers=bearer("nope")) as r:
            assert r.status == 401
    finally:
        await running.runner.cleanup()


# Origins and CORS


async def test_foreign_origin_is_refused_on_rest(
    files: Path, http: aiohttp.ClientSession
) -> None:
    """A page of another origin gets 403 on REST; an allowed one gets CORS headers."""
    running = await guarded(files, allowed_origins=["https://app.example"])
    try:
        headers = {**bearer("admin-token"), "Origin": "https://evil.example"}
        async with http.post(
            running.url + "/api/v1/pods", json=pod("a"), headers=headers
        ) as r:
            assert r.status == 403
        assert running.hub.collection("pods").list_changes()[0] == []

        headers["Origin"] = "https://app.example"
        async with http.get(running.url + "/api/v1/pods", headers=headers) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Origin" in r.headers.getall("Vary")
        async with http.get(
            running.url + "/api/v1/pods", headers={"Origin": headers["Origin"]}
        ) as r:
            assert r.status == 401
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    finally:
        await running.runner.cleanup()


async def test_cors_preflight_from_allowed_origin_only(
    files: Path, http: aiohttp.ClientSession
) -> None:
    """A preflight from an allowed origin is answered 204 without credentials."""
    running = await guarded(files, allowed_origins=["https://app.example"])
    try:
        ask = {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        async with http.options(running.url + "/api/v1/pods/a", headers=ask) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "PUT" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        ask["Origin"] = "https://evil.example"
        async with http.options(running.url + "/api/v1/pods/a", headers=ask) as r:
            assert r.status == 403
            assert "Access-Control-Allow-Origin" not in r.headers
    finally:
        await running.runner.cleanup()


async def test_cross_site_websocket_is_refused_even_with_a_token(
    secured: RunningHub,
) -> None:
    """Cross-site WebSocket hijacking: a foreign page's handshake gets 403."""
    url = f"{secured.ws_url}/api/v1/watch/public?access_token=alice-token"
    with pytest.raises(Exception) as caught:
        async with connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert "403" in str(caught.value)


# Limits


async def test_write_rate_per_client_answers_429(
    files: Path, http: aiohttp.ClientSession
) -> None:
    """Writes above the burst get 429 with Retry-After; another client is unaffected."""
    running = await guarded(files, write_rate=0.5, write_burst=3)
    try:
        url = running.url + "/api/v1/bobs"
        codes = []
        for i in range(5):
            async with http.post(
                url, json=pod(f"b{i}"), headers=bearer("bob-token")
            ) as r:
                codes.append(r.status)
                if r.status == 429:
                    assert (await status_of(r))["reason"] == "TooManyRequests"
                    assert int(r.headers["Retry-After"]) >= 1
        assert codes == [201, 201, 201, 429, 429]
        async with http.post(url, json=pod("c"), headers=bearer("admin-token")) as r:
            assert r.status == 201
        async with http.get(url, headers=bearer("bob-token")) as r:
            assert r.status == 200  # reads are not writes
    finally:
        await running.runner.cleanup()


async def test_objects_per_collection_answers_429(
    files: Path, http: aiohttp.ClientSession
) -> None:
    """A collection at its object limit refuses creates until a delete."""
    running = await guarded(files, max_objects_per_collection=3)
    try:
        url = running.url + "/api/v1/bobs"
        creates = [
            http.post(url, json=pod(f"b{i}"), headers=bearer("bob-token"))
            for i in range(6)
        ]
        codes = []
        for response in await asyncio.gather(*creates):
            codes.append(response.status)
            response.release()
        assert sorted(codes) == [201, 201, 201, 429, 429, 429]
        async with http.post(
            running.url + "/api/v1/other", json=pod("x"), headers=bearer("admin-token")
        ) as r:
            assert r.status == 201
        name = running.hub.collection("bobs").list_changes()[0][0].name
        async with http.delete(f"{url}/{name}", headers=bearer("bob-token")) as r:
            assert r.status == 200
        async with http.post(url, json=pod("again"), headers=bearer("bob-token")) as r:
            assert r.status == 201
    finally:
        await running.runner.cleanup()


async def test_thousands_of_watches_from_one_client_are_cut_off(files: Path) -> None:
    """One client's watches past its limit get 429; another's still works."""
    running = await guarded(files, max_watchers_per_client=20)
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as greedy,
            aiohttp.ClientSession() as normal,
        ):
            neighbour = await normal.get(
                running.url + "/api/v1/watch/public", headers=bearer("alice-token")
            )
            assert neighbour.status == 200

            async def attempt() -> tuple[int, aiohttp.ClientResponse]:
                r = await greedy.get(
                    running.url + "/api/v1/watch/public", headers=bearer("admin-token")
                )
                return r.status, r

            results = await asyncio.gather(*(attempt() for _ in range(2000)))
            codes = [code for code, _ in results]
            assert codes.count(200) == 20
            assert codes.count(429) == 1980
            for code, r in results:
                if code == 429:
                    assert "limit per client" in (await status_of(r))["message"]
                    r.release()

            await running.hub.collection("public").create(pod("seen"))
            (event,) = await read_lines(neighbour, 1)
            assert event["object"]["metadata"]["name"] == "seen"
            for _, r in results:
                r.close()
            neighbour.close()
        await eventually(lambda: running.hub.watchers == 0)
        guard = running.runner.app[GUARD_KEY]  # type: ignore[index]
        await eventually(lambda: guard.watchers.total == 0)
    finally:
        await running.runner.cleanup()


async def test_total_watchers_limit_answers_429(http: aiohttp.ClientSession) -> None:
    """Past the hub's limit on open watches, the next one gets 429."""
    running = await start_hub(Hub(MemoryStore()), ServerConfig(max_watchers=3))
    try:
        url = running.url + "/api/v1/watch/pods"
        open_ = [await http.get(url) for _ in range(3)]
        assert [r.status for r in open_] == [200, 200, 200]
        async with http.get(url) as r:
            assert r.status == 429
            assert "its limit" in (await status_of(r))["message"]
        open_[0].close()
        await eventually(lambda: running.hub.watchers == 2)
        later = await http.get(url)
        assert later.status == 200
        for r in [*open_, later]:
            r.close()
    finally:
        await running.runner.cleanup()


# The server process: start-up, logs, TLS


def test_serve_refuses_an_open_hub_beyond_the_loopback(tmp_path: Path) -> None:
    """Serving on a public address without authentication is refused at start."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=TIMEOUT * 3,
    )
    assert result.returncode == 2
    assert "without authentication" in result.stderr


def test_serve_reports_a_bad_token_file(tmp_path: Path) -> None:
    """A malformed token file stops the hub at start with the line, not the token."""
    (tmp_path / "tokens.csv").write_text("s3cret-token\n")
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "serve", "--token-file", "tokens.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=TIMEOUT * 3,
    )
    assert result.returncode == 2
    assert "line 1" in result.stderr
    assert "s3cret" not in result.stderr


async def test_served_hub_logs_no_credentials(
    files: Path, hub_processes: list[Any]
) -> None:
    """The CLI passes --token; the log says how callers are checked, and no token."""
    proc = spawn_hub(
        files,
        "--store",
        "memory",
        "--token-file",
        "tokens.csv",
        "--rules-file",
        "rules.json",
    )
    hub_processes.append(proc)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{proc.url}/api/v1/watch/public?access_token=alice-token&timeoutSeconds=1"
        ) as r:
            assert r.status == 200
            await r.read()
        async with http.get(
            proc.url + "/api/v1/public", headers=bearer("alice-token")
        ) as r:
            assert r.status == 200
        async with http.get(
            proc.url + "/api/v1/public", headers=bearer("bob-token")
        ) as r:
            assert r.status == 403
    command = [
        sys.executable,
        "-m",
        "clients.cli",
        "get",
        "public",
        "--server",
        proc.url,
    ]
    allowed = subprocess.run(
        [*command, "--token", "alice-token"], capture_output=True, text=True, timeout=30
    )
    assert allowed.returncode == 0, allowed.stderr
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert "401 Unauthorized" in refused.stderr
    await eventually(lambda: '/api/v1/public" 403 ' in proc.output())
    log = proc.output()
    assert "authentication: 3 bearer tokens; anonymous requests refused" in log
    assert "access_token=REDACTED" in log
    assert "alice-token" not in log and "bob-token" not in log


async def test_tls_serves_https(tmp_path: Path, hub_processes: list[Any]) -> None:
    """With a certificate and key the hub speaks HTTPS, and plain HTTP fails."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    proc = spawn_hub(
        tmp_path, "--store", "memory", "--tls-cert", "cert.pem", "--tls-key", "key.pem"
    )
    hub_processes.append(proc)
    https = proc.url.replace("http://", "https://")
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            https + "/api/v1/pods", json=pod("a"), ssl=client_context
        ) as r:
            assert r.status == 201
        async with http.get(https + "/api/v1/pods", ssl=client_context) as r:
            assert len((await r.json())["items"]) == 1
        with pytest.raises(aiohttp.ClientError):
            async with http.get(proc.url + "/api/v1/pods") as r:
                await r.read()
    assert f"listening on {https}" in proc.output()
