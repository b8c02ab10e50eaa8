"""Errors of the hub, each one a Kubernetes-style ``Status``.

Every failure the hub reports maps onto one ``Status`` body (see PROTOCOL.md)::

    HubError                      (Status with a reason and an HTTP code)
    ├── BadRequest                400
    ├── Unauthorized              401
    ├── Forbidden                 403
    ├── NotFound                  404, also a LookupError
    ├── Conflict                  409
    │   └── AlreadyExists         409
    ├── Gone                      410
    │   └── Expired               410, a resourceVersion older than kept history
    ├── RequestEntityTooLarge     413
    ├── UnsupportedMediaType      415
    ├── Invalid                   422, also a ValueError
    ├── TooManyRequests           429
    ├── InternalError             500
    ├── StoreUnavailable          503
    └── Timeout                   504

The same classes serve the server, the embedded hub and the clients, so a caller
catches one type wherever the hub runs.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "Conflict",
    "Expired",
    "Forbidden",
    "Gone",
    "HubError",
    "InternalError",
    "Invalid",
    "NotFound",
    "RequestEntityTooLarge",
    "StoreUnavailable",
    "Timeout",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_from_status",
]


class HubError(Exception):
    """
    A failure that the hub reports as a ``Status``.

    Attributes:
        message: What went wrong, lowercase, with the values involved.
        name: The object's name, when the failure concerns one object.
        kind: The collection, when the failure concerns one.
    """

    reason = "InternalError"
    code = 500

    def __init__(self, message: str, *, name: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.kind = kind

    def to_status(self) -> dict[str, Any]:
        """Return the ``Status`` body for this error."""
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(HubError, ValueError):
    """The request itself is malformed: a bad selector or query parameter."""

    reason = "BadRequest"
    code = 400


class Unauthorized(HubError):
    """The request carries no valid credentials."""

    reason = "Unauthorized"
    code = 401


class Forbidden(HubError):
    """The caller may not do this."""

    reason = "Forbidden"
    code = 403


class NotFound(HubError, LookupError):
    """The object, or the collection, does not exist."""

    reason = "NotFound"
    code = 404


class Conflict(HubError):
    """A write lost a compare-and-set on the object's resourceVersion."""

    reason = "Conflict"
    code = 409


class AlreadyExists(Conflict):
    """A create named an object that exists already."""

    reason = "AlreadyExists"


class Gone(HubError):
    """What was asked for is no longer there."""

    reason = "Gone"
    code = 410


class Expired(Gone):
    """A resourceVersion is older than the history the hub keeps."""

    reason = "Expired"


class RequestEntityTooLarge(HubError):
    """A body or an object is above the configured maximum size."""

    reason = "RequestEntityTooLarge"
    code = 413


class UnsupportedMediaType(HubError):
    """A PATCH with a content type other than a JSON merge patch."""

    reason = "UnsupportedMediaType"
    code = 415


class Invalid(HubError, ValueError):
    """A body that is not a valid object: bad JSON, bad types, a bad name."""

    reason = "Invalid"
    code = 422


class TooManyRequests(HubError):
    """A limit on requests or watchers is reached."""

    reason = "TooManyRequests"
    code = 429


class InternalError(HubError):
    """An unexpected failure inside the hub."""

    reason = "InternalError"
    code = 500


class StoreUnavailable(HubError):
    """The store cannot be reached; the write was not acknowledged."""

    reason = "ServiceUnavailable"
    code = 503


class Timeout(HubError):
    """A wait ran out: a resourceVersion the hub never reached, say."""

    reason = "Timeout"
    code = 504


_BY_REASON: dict[str, type[HubError]] = {
    cls.reason: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        AlreadyExists,
        Gone,
        Expired,
        RequestEntityTooLarge,
        UnsupportedMediaType,
        Invalid,
        TooManyRequests,
        InternalError,
        StoreUnavailable,
        Timeout,
    )
}


def error_from_status(status: dict[str, Any]) -> HubError:
    """
    Rebuild the error that a ``Status`` body describes.

    Unknown reasons give a plain :class:`HubError` carrying the Status's code.
    """
    reason = str(status.get("reason", ""))
    message = str(status.get("message", "")) or reason.lower()
    details = status.get("details") or {}
    if not isinstance(details, dict):
        details = {}
    cls = _BY_REASON.get(reason)
    if cls is None:
        error = HubError(message, name=str(details.get("name", "")))
        error.reason = reason or "Unknown"
        code = status.get("code")
        error.code = code if isinstance(code, int) else 500
        return error
    return cls(
        message,
        name=str(details.get("name", "")),
        kind=str(details.get("kind", "")),
    )
