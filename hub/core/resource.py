"""Resources: validation of names and bodies, and the metadata the hub owns."""

from __future__ import annotations

import copy
import os
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from .errors import Invalid

__all__ = [
    "SERVER_FIELDS",
    "check_collection",
    "check_name",
    "merge_patch",
    "prepare_create",
    "prepare_update",
    "validate_body",
]

# The metadata that the hub owns: a client's values for them are replaced.
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation")

_COLLECTION = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\Z")


def check_collection(collection: str) -> str:
    """
    Check a collection's name: a DNS label of at most 63 characters.

    Raises:
        Invalid: the name is out of pattern.
    """
    if len(collection) > 63 or not _COLLECTION.match(collection):
        raise Invalid(
            f"collection name {collection!r} must match "
            "[a-z0-9]([-a-z0-9]*[a-z0-9])? and be at most 63 characters",
            kind=collection[:63],
        )
    return collection


def check_name(name: Any, collection: str = "") -> str:
    """
    Check an object's name: a lowercase DNS subdomain of at most 253 characters.

    Raises:
        Invalid: the name is missing, not a string, or out of pattern.
    """
    if not isinstance(name, str) or not name:
        raise Invalid("metadata.name is required and must be a string", kind=collection)
    if len(name) > 253 or not _NAME.match(name):
        raise Invalid(
            f"metadata.name {name[:253]!r} must be a lowercase DNS subdomain "
            "of at most 253 characters",
            kind=collection,
        )
    return name


def _check_labels(labels: Any, collection: str, name: str) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise Invalid("metadata.labels must be an object", name=name, kind=collection)
    for key, value in labels.items():
        if not isinstance(value, str):
            raise Invalid(
                f"metadata.labels[{key!r}] must be a string", name=name, kind=collection
            )


def validate_body(body: Any, collection: str) -> dict[str, Any]:
    """
    Check that a decoded body is an object with valid metadata.

    Returns the body, whose ``metadata.name`` is valid and whose labels map
    strings to strings.

    Raises:
        Invalid: the body is not an object, or its metadata is wrong.
    """
    if not isinstance(body, dict):
        raise Invalid(
            f"body must be a JSON object, not {_json_type(body)}", kind=collection
        )
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        raise Invalid("metadata must be an object with a name", kind=collection)
    name = check_name(metadata.get("name"), collection)
    _check_labels(metadata.get("labels"), collection, name)
    rv = metadata.get("resourceVersion")
    if rv is not None and rv != "" and parse_precondition(rv) is None:
        raise Invalid(
            f"metadata.resourceVersion {rv!r} must be a decimal string",
            name=name,
            kind=collection,
        )
    return body


def parse_precondition(rv: Any) -> int | None:
    """Return a client's resourceVersion as a number, ``None`` if not one."""
    if isinstance(rv, str) and rv.isdecimal() and rv.isascii() and len(rv) <= 19:
        return int(rv)
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


class _Clock:
    """The current time as RFC 3339 to the second, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        second = int(time.time())
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC)
            self._text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
            self._second = second
        return self._text


class _Uids:
    """
    Random (version 4) UUIDs, drawn from the system's random source in bulk.

    One call to the random source per 256 uids instead of one per uid: on the
    write path a system call is dear.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Drop the pool, so that a forked child draws its own uids."""
        self._pool = b""
        self._offset = 0

    def __call__(self) -> str:
        if self._offset >= len(self._pool):
            self._pool = os.urandom(16 * 256)
            self._offset = 0
        raw = self._pool[self._offset : self._offset + 16]
        self._offset += 16
        return str(uuid.UUID(bytes=raw, version=4))


_now = _Clock()
_uid = _Uids()
os.register_at_fork(after_in_child=_uid.reset)


def prepare_create(body: dict[str, Any], rv: int) -> dict[str, Any]:
    """Return the object to store for a create at resourceVersion ``rv``."""
    obj = dict(body)
    metadata = dict(obj["metadata"])
    metadata["resourceVersion"] = str(rv)
    metadata["uid"] = _uid()
    metadata["creationTimestamp"] = _now()
    metadata["generation"] = 1
    obj["metadata"] = metadata
    return obj


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key != "metadata"}


def prepare_update(
    old: dict[str, Any], body: dict[str, Any], rv: int
) -> dict[str, Any]:
    """
    Return the object to store for an update of ``old`` at resourceVersion ``rv``.

    The uid and creation time carry over; the generation moves on when anything
    outside ``metadata`` changes, as a Kubernetes object's does when its spec does.
    """
    obj = dict(body)
    metadata = dict(obj["metadata"])
    old_metadata = old["metadata"]
    metadata["resourceVersion"] = str(rv)
    metadata["uid"] = old_metadata["uid"]
    metadata["creationTimestamp"] = old_metadata["creationTimestamp"]
    generation = old_metadata.get("generation", 1)
    if _content(old) != _content(obj):
        generation += 1
    metadata["generation"] = generation
    obj["metadata"] = metadata
    return obj


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7386) to ``target``; neither is changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
