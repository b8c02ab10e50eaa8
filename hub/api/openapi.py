"""The OpenAPI 3.0 description of the hub's HTTP API, served at ``/openapi.json``.

It describes the REST operations and the watch routes with the JSON of every
answer: the objects, the ``List`` and the ``Status`` of each failure. A watch
also answers ``GET /api/v1/{collection}?watch=true``; OpenAPI has one operation
per path and method, so that form is described in the list's text only.
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["openapi_document"]

_COLLECTION = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


_FAILURES = {
    "400": "a malformed parameter or selector",
    "401": "no valid credentials",
    "403": "the caller may not do this, or a foreign origin",
    "404": "no such object",
    "409": "a stale resourceVersion, or the object exists already",
    "413": "a body or object above the size limit",
    "415": "a patch type other than a JSON merge patch",
    "422": "a body that is not a valid object",
    "429": "a limit on writes, watches or objects is reached",
}


def _responses(success: str, schema: dict[str, Any], *codes: str) -> dict[str, Any]:
    responses = {success: _json(schema, "success")}
    for code in ("400", "401", "403", "429", *codes):
        responses[code] = _json(_ref("Status"), _FAILURES[code])
    return responses


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": {"type": "string", **schema},
    }


_PATH_COLLECTION = _param(
    "collection", "path", "the collection", pattern=_COLLECTION, maxLength=63
)
_PATH_NAME = _param("name", "path", "the object's name", pattern=_NAME, maxLength=253)
_LABELS = _param("labelSelector", "query", "a label selector, Kubernetes syntax")
_FIELDS = _param("fieldSelector", "query", "metadata.name with =, == or !=")
_VERSION = _param("resourceVersion", "query", "where a watch starts")

_WATCH_PARAMS = [
    _VERSION,
    _LABELS,
    _FIELDS,
    {
        "name": "allowWatchBookmarks",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean"},
    },
    {
        "name": "timeoutSeconds",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    {
        "name": "sendInitialEvents",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean"},
    },
]

_WATCH_RESPONSE = {
    "description": "a stream of events: NDJSON, WebSocket frames or SSE records",
    "content": {"application/json;stream=watch": {"schema": _ref("WatchEvent")}},
}


def _watch(description: str, *params: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _WATCH_RESPONSE}
    for code in ("400", "401", "403", "429"):
        responses[code] = _json(_ref("Status"), _FAILURES[code])
    return {
        "get": {
            "summary": description,
            "parameters": [*params, *_WATCH_PARAMS],
            "responses": responses,
        }
    }


_SCHEMAS: dict[str, Any] = {
    "Status": {
        "type": "object",
        "required": ["kind", "apiVersion", "status", "message", "reason", "code"],
        "properties": {
            "kind": {"type": "string", "enum": ["Status"]},
            "apiVersion": {"type": "string", "enum": ["v1"]},
            "metadata": {"type": "object"},
            "status": {"type": "string", "enum": ["Failure"]},
            "message": {"type": "string"},
            "reason": {"type": "string"},
            "details": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
            },
            "code": {"type": "integer", "minimum": 400, "maximum": 599},
        },
    },
    "Metadata": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": _NAME, "maxLength": 253},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "resourceVersion": {"type": "string", "pattern": r"^[0-9]+$"},
            "uid": {"type": "string"},
            "creationTimestamp": {"type": "string"},
            "generation": {"type": "integer"},
        },
    },
    "Object": {
        "type": "object",
        "required": ["metadata"],
        "properties": {"metadata": _ref("Metadata")},
        "additionalProperties": True,
    },
    "List": {
        "type": "object",
        "required": ["kind", "apiVersion", "metadata", "items"],
        "properties": {
            "kind": {"type": "string", "enum": ["List"]},
            "apiVersion": {"type": "string", "enum": ["v1"]},
            "metadata": {
                "type": "object",
                "required": ["resourceVersion"],
                "properties": {"resourceVersion": {"type": "string"}},
            },
            "items": {"type": "array", "items": _ref("Object")},
        },
    },
    "WatchEvent": {
        "type": "object",
        "required": ["type", "object"],
        "properties": {
            "type": {
                "type": "string",
                "enum": ["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"],
            },
            "object": {"type": "object"},
        },
    },
}


@cache
def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document of the API (the same object on every call)."""
    body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("Object")}},
    }
    patch_body = {
        "required": True,
        "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "watchhub",
            "version": "v1",
            "description": "JSON resources in collections; every change streamed.",
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "liveness; needs no credentials",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "readiness: the store answers and the log is caught up",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "ready",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "503": _json(_ref("Status"), "not ready"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (see docs/operations.md)",
                    "responses": {
                        **_responses("200", {"type": "string"}),
                        "200": {
                            "description": "the text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                    },
                }
            },
            "/hubinfo": {
                "get": {
                    "summary": "the hub's resourceVersion, watchers and collections",
                    "responses": _responses("200", {"type": "object"}),
                }
            },
            "/api/v1/{collection}": {
                "parameters": [_PATH_COLLECTION],
                "get": {
                    "summary": "list a collection; with watch=true, watch it instead",
                    "parameters": [_LABELS, _FIELDS],
                    "responses": _responses("200", _ref("List")),
                },
                "post": {
                    "summary": "create an object",
                    "requestBody": body,
                    "responses": _responses("201", _ref("Object"), "409", "413", "422"),
                },
            },
            "/api/v1/{collection}/{name}": {
                "parameters": [_PATH_COLLECTION, _PATH_NAME],
                "get": {
                    "summary": "get one object",
                    "responses": _responses("200", _ref("Object"), "404"),
                },
                "put": {
                    "summary": "replace an object; a resourceVersion is a precondition",
                    "requestBody": body,
                    "responses": _responses(
                        "200", _ref("Object"), "404", "409", "413", "422"
                    ),
                },
                "patch": {
                    "summary": "apply a JSON merge patch (RFC 7386)",
                    "requestBody": patch_body,
                    "responses": _responses(
                        "200", _ref("Object"), "404", "409", "413", "415", "422"
                    ),
                },
                "delete": {
                    "summary": "delete an object; returns its last state",
                    "parameters": [_VERSION],
                    "responses": _responses("200", _ref("Object"), "404", "409"),
                },
            },
            "/api/v1/watch/{collection}": _watch(
                "watch a collection", _PATH_COLLECTION
            ),
            "/api/v1/watch/{collection}/{name}": _watch(
                "watch one object, which need not exist yet",
                _PATH_COLLECTION,
                _PATH_NAME,
            ),
        },
    }
