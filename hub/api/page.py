"""The live page at ``/`` and the hub summary it reads.

- ``GET /``: the page (``hub/web/static/index.html``), plain HTML, CSS and
  JavaScript with no build step. It lists a collection over REST, then
  watches it over WebSocket from the list's resourceVersion.
- ``GET /static/{file}``: the page's script and style (those files only).
- ``GET /hubinfo``: a JSON summary of the hub, which the page polls.
"""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

from ..core import codec
from ..hub import Hub

__all__ = ["STATIC", "hub_info", "setup"]

#: The folder of the page's files, inside the installed package.
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"

_HUB = web.AppKey("page_hub", Hub)

# The page is small and changes with the package: browsers revalidate it each
# time rather than keep a stale copy after an upgrade.
_NO_CACHE = {"Cache-Control": "no-cache"}


def setup(app: web.Application, hub: Hub) -> None:
    """Serve the page, its files and ``/hubinfo`` from ``app``."""
    app[_HUB] = hub
    app.router.add_get("/", _index)
    app.router.add_get("/hubinfo", _hub_info)
    app.router.add_get("/static/{file}", _static)


def hub_info(hub: Hub) -> dict[str, object]:
    """
    Return the hub's summary, as ``GET /hubinfo`` answers it.

    ``resourceVersion`` is the newest the hub has applied (a decimal string, as
    everywhere), ``watchers`` the number of watches open now, ``collections``
    the names of the collections written so far, ``store`` the backend's kind.
    """
    return {
        "kind": "HubInfo",
        "apiVersion": "v1",
        "resourceVersion": str(hub.resource_version),
        "watchers": hub.watchers,
        "collections": hub.collections(),
        "store": hub.store.kind,
    }


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=_NO_CACHE)


async def _static(request: web.Request) -> web.FileResponse:
    # Only the page's own files, by name: nothing else on disk is reachable.
    name = request.match_info["file"]
    if name not in _files():
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers=_NO_CACHE)


@functools.cache
def _files() -> frozenset[str]:
    return frozenset(path.name for path in STATIC.iterdir() if path.is_file())


async def _hub_info(request: web.Request) -> web.Response:
    return web.Response(
        body=codec.dumps(hub_info(request.app[_HUB])),
        content_type="application/json",
        headers=_NO_CACHE,
    )
