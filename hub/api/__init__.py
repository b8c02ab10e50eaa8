"""The HTTP API: REST and watch routes over one :class:`~hub.hub.Hub`."""

from __future__ import annotations

from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
