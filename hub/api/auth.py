"""Who is calling, and what they may do: bearer tokens, JWTs and rules.

Authentication turns a request's credentials into an :class:`Identity`:

- a static token from a token file (the Kubernetes static token file format,
  CSV lines ``token,user,uid,"group1,group2"``), or
- a JWT signed with a configured key (HS256 with a shared secret, RS256 with
  an RSA public key), whose signature, expiry and audience are checked.

Credentials come in the ``Authorization: Bearer <token>`` header. Browsers
cannot set headers on a WebSocket or an ``EventSource``, so watches (and only
watches) also take the token as the ``access_token`` query parameter.

Authorization reads a rules file (JSON): a request is allowed when one rule
names its user or one of its groups, its collection and its verb (``get``,
``list``, ``watch``, ``create``, ``update``, ``delete``). A hub with no rules
file lets every authenticated caller do everything.

Credentials never reach the logs: :class:`AccessLogger` writes the path
without ``access_token``, and error messages never quote a token.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..core import codec
from ..core.errors import Unauthorized
from .params import is_watch

__all__ = [
    "ANONYMOUS",
    "AUTHENTICATED",
    "VERBS",
    "AccessLogger",
    "Authenticator",
    "Identity",
    "JWTVerifier",
    "Rule",
    "Rules",
    "load_token_file",
    "request_action",
]

logger = logging.getLogger("watchhub.http")

#: The verbs a rule may name, one per kind of request.
VERBS = ("get", "list", "watch", "create", "update", "delete")

#: The group every authenticated caller belongs to, as in Kubernetes.
AUTHENTICATED = "system:authenticated"

#: The query parameter that carries a token where a browser cannot set headers.
QUERY_TOKEN = "access_token"


@dataclass(frozen=True, slots=True)
class Identity:
    """
    The caller of one request.

    Attributes:
        user: The user name.
        groups: The groups the user belongs to.
        authenticated: False for the anonymous caller.
    """

    user: str
    groups: frozenset[str] = frozenset()
    authenticated: bool = True

    def __str__(self) -> str:
        return self.user


#: The caller without credentials, where anonymous access is enabled (or where
#: no authentication is configured at all).
ANONYMOUS = Identity(
    "system:anonymous", frozenset({"system:unauthenticated"}), authenticated=False
)


def _digest(token: str) -> bytes:
    # Tokens are kept and looked up by digest, so that neither the table nor
    # the timing of a lookup reveals a token.
    return hashlib.sha256(token.encode()).digest()


def load_token_file(path: str | Path) -> dict[bytes, Identity]:
    """
    Read a static token file: one ``token,user,uid,"group1,group2"`` per line.

    ``uid`` and the groups are optional; blank lines and lines that start with
    ``#`` are skipped. Every user is also in ``system:authenticated``.

    Raises:
        ValueError: a line is malformed or a token is repeated. The message
            names the line, never the token.
    """
    tokens: dict[bytes, Identity] = {}
    with open(path, newline="", encoding="utf-8") as file:
        for number, row in enumerate(csv.reader(file), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            cells = [cell.strip() for cell in row]
            if len(cells) < 2 or not cells[0] or not cells[1] or len(cells) > 4:
                raise ValueError(
                    f"{path}, line {number}: expected token,user[,uid[,groups]]"
                )
            groups = (
                {g.strip() for g in cells[3].split(",")} if len(cells) > 3 else set()
            )
            groups.discard("")
            digest = _digest(cells[0])
            if digest in tokens:
                raise ValueError(f"{path}, line {number}: the token is repeated")
            tokens[digest] = Identity(cells[1], frozenset(groups | {AUTHENTICATED}))
    return tokens


@dataclass
class JWTVerifier:
    """
    Check JWTs signed with one key.

    A key file that holds a PEM public key selects RS256; any other content is
    an HS256 secret (surrounding white space stripped). A token must carry
    ``exp`` and ``aud``; ``aud`` must include ``audience``, and ``iss`` must
    equal ``issuer`` when one is set. The user comes from the ``sub`` claim and
    the groups from the ``groups`` claim (a list of strings).
    """

    key: str | bytes
    algorithm: str
    audience: str
    issuer: str | None = None

    @classmethod
    def from_file(
        cls, path: str | Path, audience: str, issuer: str | None = None
    ) -> JWTVerifier:
        """
        Read the key from ``path``.

        Raises:
            ValueError: the file is empty, or holds a private key.
        """
        try:
            import jwt  # noqa: F401 - PyJWT, from the "auth" extra
        except ImportError:
            raise ValueError("JWTs need PyJWT: pip install 'watchhub[auth]'") from None
        data = Path(path).read_bytes().strip()
        if not data:
            raise ValueError(f"jwt key file {path} is empty")
        if data.startswith(b"-----BEGIN"):
            if b"PRIVATE KEY" in data.split(b"\n", 1)[0]:
                raise ValueError(
                    f"jwt key file {path} holds a private key; give the public key"
                )
            return cls(data.decode(), "RS256", audience, issuer)
        return cls(data, "HS256", audience, issuer)

    def verify(self, token: str) -> Identity:
        """
        Return the identity a valid token names.

        Raises:
            Unauthorized: the token is malformed, expired, for another
                audience or issuer, badly signed, or names no user.
        """
        import jwt  # PyJWT: imported only where JWTs are used

        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise Unauthorized(f"invalid bearer token: {_lower(str(error))}") from None
        user = claims.get("sub")
        groups = claims.get("groups", [])
        if not isinstance(user, str) or not user:
            raise Unauthorized("invalid bearer token: sub must be a non-empty string")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise Unauthorized("invalid bearer token: groups must be a list of strings")
        return Identity(user, frozenset(groups) | {AUTHENTICATED})


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:].rstrip(".")


@dataclass
class Authenticator:
    """
    Turn a request's credentials into an :class:`Identity`.

    With neither tokens nor a JWT key the hub is open: every request is
    anonymous. Otherwise a request without credentials is anonymous only when
    ``anonymous`` is set, and refused with 401 when not; a request with
    credentials that are not valid is always refused.
    """

    tokens: Mapping[bytes, Identity] = field(default_factory=dict)
    jwt: JWTVerifier | None = None
    anonymous: bool = False

    @property
    def enabled(self) -> bool:
        """Tell whether any credentials are checked."""
        return bool(self.tokens) or self.jwt is not None

    def describe(self) -> str:
        """Say in a few words how callers are authenticated, for the start-up log."""
        if not self.enabled:
            return "none: every request is allowed, without credentials"
        kinds = []
        if self.tokens:
            kinds.append(f"{len(self.tokens)} bearer tokens")
        if self.jwt is not None:
            kinds.append(
                f"{self.jwt.algorithm} JWTs for audience {self.jwt.audience!r}"
            )
        anonymous = "allowed" if self.anonymous else "refused"
        return f"{' and '.join(kinds)}; anonymous requests {anonymous}"

    def authenticate(self, request: web.BaseRequest, *, allow_query: bool) -> Identity:
        """
        Return the caller of ``request``.

        ``allow_query`` lets the token come as the ``access_token`` query
        parameter, for watches from browsers.

        Raises:
            Unauthorized: the credentials are missing (and anonymous access is
                off) or not valid.
        """
        if not self.enabled:
            return ANONYMOUS
        token = _credential(request, allow_query)
        if token is None:
            if self.anonymous:
                return ANONYMOUS
            raise Unauthorized(
                "authentication required: send the header Authorization: Bearer TOKEN"
            )
        identity = self.tokens.get(_digest(token))
        if identity is not None:
            return identity
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt.verify(token)
        raise Unauthorized("invalid bearer token")


def _credential(request: web.BaseRequest, allow_query: bool) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "only bearer tokens are accepted: Authorization: Bearer TOKEN"
            )
        return token.strip()
    if allow_query:
        token = request.query.get(QUERY_TOKEN)
        if token:
            return token
    return None


# Authorization


def _names(value: Any, what: str, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: {what} must be a list of non-empty strings")
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class Rule:
    """
    One permission: these users and groups may do these verbs on these collections.

    ``*`` in any list means every one.
    """

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    collections: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: Any, where: str) -> Rule:
        """
        Read one rule from its JSON form.

        Raises:
            ValueError: the rule is malformed.
        """
        if not isinstance(value, dict):
            raise ValueError(f"{where}: a rule must be an object")
        unknown = set(value) - {"users", "groups", "collections", "verbs"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        users = _names(value.get("users", []), "users", where)
        groups = _names(value.get("groups", []), "groups", where)
        if not users and not groups:
            raise ValueError(f"{where}: a rule must name users or groups")
        collections = _names(value.get("collections"), "collections", where)
        verbs = _names(value.get("verbs"), "verbs", where)
        bad = verbs - set(VERBS) - {"*"}
        if bad:
            raise ValueError(f"{where}: unknown verbs {sorted(bad)}; use {list(VERBS)}")
        return cls(users, groups, collections, verbs)

    def applies_to(self, identity: Identity) -> bool:
        """Tell whether this rule names ``identity``, by user or by group."""
        if "*" in self.users or identity.user in self.users:
            return True
        return "*" in self.groups or not self.groups.isdisjoint(identity.groups)

    def allows(self, identity: Identity, collection: str, verb: str) -> bool:
        """Tell whether this rule lets ``identity`` do ``verb`` on ``collection``."""
        return (
            ("*" in self.verbs or verb in self.verbs)
            and ("*" in self.collections or collection in self.collections)
            and self.applies_to(identity)
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """Allow-only rules: a request is allowed when any rule allows it."""

    rules: tuple[Rule, ...] = ()

    @classmethod
    def load(cls, path: str | Path) -> Rules:
        """
        Read a rules file: ``{"rules": [{"users": [...], "groups": [...],
        "collections": [...], "verbs": [...]}, ...]}``.

        Raises:
            ValueError: the file is not valid JSON or a rule is malformed.
        """
        try:
            document = codec.loads(Path(path).read_bytes())
        except ValueError as error:
            raise ValueError(f"rules file {path} is not valid JSON: {error}") from None
        return cls.parse(document, str(path))

    @classmethod
    def parse(cls, document: Any, where: str = "rules") -> Rules:
        """
        Read rules from their JSON form.

        Raises:
            ValueError: a rule is malformed.
        """
        if not isinstance(document, dict) or not isinstance(
            document.get("rules"), list
        ):
            raise ValueError(f"{where}: expected an object with a list of rules")
        return cls(
            tuple(
                Rule.parse(rule, f"{where}, rule {number}")
                for number, rule in enumerate(document["rules"], start=1)
            )
        )

    def allows(self, identity: Identity, collection: str, verb: str) -> bool:
        """Tell whether any rule lets ``identity`` do ``verb`` on ``collection``."""
        return any(rule.allows(identity, collection, verb) for rule in self.rules)


_WRITE_VERBS = {
    "POST": "create",
    "PUT": "update",
    "PATCH": "update",
    "DELETE": "delete",
}


def request_action(request: web.Request) -> tuple[str, str] | None:
    """
    Return the collection and verb of an API request, or ``None`` for others.

    Raises:
        BadRequest: the ``watch`` parameter is malformed.
    """
    collection = request.match_info.get("collection")
    if collection is None:
        return None
    if request.method in ("GET", "HEAD"):
        if request.path.startswith("/api/v1/watch/"):
            return collection, "watch"
        if "name" in request.match_info:
            return collection, "get"
        return collection, "watch" if is_watch(request.query) else "list"
    verb = _WRITE_VERBS.get(request.method)
    return None if verb is None else (collection, verb)


# Logging without credentials


class AccessLogger(AbstractAccessLogger):
    """
    The access log, with the ``access_token`` query parameter left out.

    One INFO line per request: address, method, path and query (redacted),
    status, body size and time taken, with the same values as extra fields.
    """

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        """Write one line for a finished request."""
        query = "&".join(
            f"{key}={'REDACTED' if key == QUERY_TOKEN else value}"
            for key, value in request.query.items()
        )
        path = request.path + (f"?{query}" if query else "")
        self.logger.info(
            '%s "%s %s" %d %d %.3fs',
            request.remote,
            request.method,
            path,
            response.status,
            response.body_length,
            time,
            extra={
                "remote": request.remote,
                "method": request.method,
                "path": path,
                "status": response.status,
            },
        )
