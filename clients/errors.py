"""Errors of the hub's clients.

Every error that a client raises is a :class:`ClientError`::

    ClientError
    ├── ApiError          the hub answered with a failure: a ``Status`` body
    │                     (each one also the matching hub.core.errors class,
    │                     so ``except NotFound`` works in process and remotely)
    ├── DecodeError       a watch stream is malformed, truncated or oversized;
    │                     also a ValueError
    └── TransportError    the hub could not be reached, or the connection broke
                          before an answer; also an OSError

A watch that the consumer stops ends its iteration quietly; a stream that the
peer breaks raises :class:`DecodeError` (see :mod:`clients.decoders`).
"""

from __future__ import annotations

from typing import Any

from hub.core import codec
from hub.core.errors import HubError, error_from_status

__all__ = [
    "ApiError",
    "ClientError",
    "DecodeError",
    "TransportError",
    "status_from_response",
]

# The reason a Kubernetes client gives a failure answered without a Status body
# (client-go's NewGenericServerResponse does the same).
_REASON_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ClientError(Exception):
    """The root of every error that the hub's clients raise."""


class ApiError(ClientError):
    """
    The hub answered a request with a failure.

    ``ApiError(status)`` returns an instance of a subclass that is also the
    :mod:`hub.core.errors` class of the Status's reason: a 404 is both an
    ``ApiError`` and a ``hub.core.errors.NotFound`` (hence a ``LookupError``).

    Attributes:
        status: The ``Status`` body as the hub sent it, or as built from an
            answer that carried none.
        code: The HTTP status code.
        reason: The machine-readable reason: ``NotFound``, ``Conflict``, ...
        message: The hub's description of the failure.
        name: ``details.name`` of the Status, or "".
        kind: ``details.kind`` of the Status, or "".
    """

    # Set on the subclasses: the hub.core.errors class they also are.
    hub_error: type[HubError] = HubError

    def __new__(cls, status: dict[str, Any], *args: Any, **kwargs: Any) -> ApiError:
        if cls is ApiError:
            cls = _api_error_class(status)
        return super().__new__(cls)

    def __init__(self, status: dict[str, Any]) -> None:
        details = status.get("details")
        details = details if isinstance(details, dict) else {}
        code = status.get("code")
        self.status = status
        if not isinstance(code, int) or isinstance(code, bool):
            code = self.hub_error.code
        self.code = code
        self.reason = str(status.get("reason") or "") or _REASON_BY_CODE.get(
            self.code, "Unknown"
        )
        self.message = str(status.get("message") or "") or self.reason.lower()
        self.name = str(details.get("name", ""))
        self.kind = str(details.get("kind", ""))
        Exception.__init__(self, self.message)

    @classmethod
    def from_response(
        cls, code: int, body: bytes, content_type: str = "application/json"
    ) -> ApiError:
        """Build the error of an HTTP answer with ``code`` and ``body``."""
        return cls(status_from_response(code, body, content_type))

    def to_status(self) -> dict[str, Any]:
        """Return the ``Status`` body of this error."""
        return dict(self.status)

    def __reduce__(self) -> tuple[Any, ...]:
        # The subclasses are made at run time: rebuild through ApiError.
        return (ApiError, (self.status,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.reason}, {self.message!r})"


class DecodeError(ClientError, ValueError):
    """
    A watch stream is malformed, truncated, oversized or broken by the peer.

    The events before the fault were all delivered; none after it are, and no
    partial event ever is.
    """


class TransportError(ClientError, OSError):
    """The hub could not be reached, or the connection broke before an answer."""


_API_ERROR_CLASSES: dict[type[HubError], type[ApiError]] = {}


def _api_error_class(status: dict[str, Any]) -> type[ApiError]:
    """Return the subclass of ApiError that is also the Status's hub error."""
    hub_class = type(error_from_status(status))
    if hub_class is HubError and not status.get("reason"):
        code = status.get("code")
        reason = _REASON_BY_CODE.get(code) if isinstance(code, int) else None
        if reason is not None:
            hub_class = type(error_from_status({"reason": reason}))
    api_class = _API_ERROR_CLASSES.get(hub_class)
    if api_class is None:
        api_class = type(
            f"Api{hub_class.__name__}",
            (ApiError, hub_class),
            {
                "__doc__": f"An :class:`ApiError` that is also a {hub_class.__name__}.",
                "__module__": __name__,
                "hub_error": hub_class,
            },
        )
        _API_ERROR_CLASSES[hub_class] = api_class
    return api_class


def status_from_response(
    code: int, body: bytes, content_type: str = "application/json"
) -> dict[str, Any]:
    """
    Return the ``Status`` of a failed HTTP answer.

    A body that is a Status is returned as it is, its ``code`` filled in from
    the answer when it lacks one. Any other body (HTML from a proxy, plain
    text, JSON of another kind) gives a Status built from the HTTP code, whose
    message quotes the start of the body.
    """
    decoded: Any = None
    if "json" in content_type or body[:1] == b"{":
        try:
            decoded = codec.loads(body)
        except ValueError:
            decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        found: dict[str, Any] = decoded
        if not isinstance(found.get("code"), int):
            found = {**found, "code": code}
        return found

    reason = _REASON_BY_CODE.get(code, "Unknown")
    text = body[:200].decode("utf-8", "replace").strip()
    message = f"the server answered {code}"
    if text:
        message += f": {text}"
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {},
        "code": code,
    }
