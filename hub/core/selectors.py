"""Label and field selectors, in the Kubernetes syntax.

A label selector is a comma-separated list of requirements, all of which must
hold (set semantics, as in Kubernetes)::

    a=b   a==b   a!=b   a in (x,y)   a notin (x)   a   !a

``a!=b`` and ``a notin (...)`` also match objects without the label ``a``.

A field selector supports ``metadata.name`` with ``=``, ``==`` and ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import BadRequest

__all__ = ["FieldSelector", "LabelSelector", "Requirement"]

_KEY_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY = re.compile(rf"({_KEY_PREFIX}/)?{_KEY_NAME}\Z")
_VALUE = re.compile(rf"({_KEY_NAME})?\Z")
_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=(),]+)")

_OPERATORS = ("=", "==", "!=", "in", "notin", "exists", "!")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One requirement of a label selector: a key, an operator and values."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Tell whether ``labels`` meet this requirement."""
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("in", "="):
            return labels.get(self.key) in self.values
        # "!=" and "notin" also hold where the label is absent.
        return labels.get(self.key) not in self.values

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return f"!{self.key}"
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(sorted(self.values))})"
        (value,) = self.values
        return f"{self.key}{self.operator}{value}"


def _tokens(text: str) -> list[str]:
    tokens = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover - the pattern matches any non-space
            raise BadRequest(f"unable to parse label selector {text!r}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """
        Parse a label selector.

        Raises:
            BadRequest: the selector is malformed.
        """
        if not text or not text.strip():
            return cls()
        parser = _Parser(text)
        return cls(tuple(parser.requirements()))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Tell whether an object with ``labels`` is selected."""
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    @property
    def empty(self) -> bool:
        """True for the selector that selects everything."""
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def fail(self, why: str) -> BadRequest:
        return BadRequest(f"unable to parse label selector {self.text!r}: {why}")

    def peek(self) -> str | None:
        if self.position < len(self.tokens):
            return self.tokens[self.position]
        return None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end")
        self.position += 1
        return token

    def key(self) -> str:
        key = self.take()
        if not _KEY.match(key) or len(key) > 317:
            raise self.fail(f"invalid label key {key!r}")
        return key

    def value(self) -> str:
        token = self.peek()
        if token in (None, ",", ")"):
            return ""  # "a=" selects the empty value, as in Kubernetes
        value = self.take()
        if not _VALUE.match(value):
            raise self.fail(f"invalid label value {value!r}")
        return value

    def requirements(self) -> list[Requirement]:
        found = [self.requirement()]
        while self.peek() is not None:
            if self.take() != ",":
                raise self.fail("expected ',' between requirements")
            found.append(self.requirement())
        return found

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return Requirement(self.key(), "!")
        key = self.key()
        token = self.peek()
        if token in (None, ","):
            return Requirement(key, "exists")
        op = self.take()
        if op in ("=", "==", "!="):
            return Requirement(
                key, "!=" if op == "!=" else "=", frozenset([self.value()])
            )
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set())
        raise self.fail(f"unexpected {op!r} after key {key!r}")

    def value_set(self) -> frozenset[str]:
        if self.take() != "(":
            raise self.fail("expected '(' to open a set of values")
        if self.peek() == ")":
            raise self.fail("a set of values must not be empty")
        values = [self.value()]
        while True:
            token = self.take()
            if token == ")":
                return frozenset(values)
            if token != ",":
                raise self.fail(f"unexpected {token!r} in a set of values")
            values.append(self.value())


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """A field selector on ``metadata.name``: equal to, or not equal to, a name."""

    name: str | None = None
    negated: bool = False

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        """
        Parse a field selector.

        Raises:
            BadRequest: the selector is malformed or names another field.
        """
        if not text or not text.strip():
            return cls()
        selector = cls()
        for term in text.split(","):
            term = term.strip()
            for op in ("!=", "==", "="):
                field, sep, value = term.partition(op)
                if sep:
                    break
            else:
                raise BadRequest(
                    f"invalid field selector {text!r}: {term!r} has no operator"
                )
            field = field.strip()
            if field != "metadata.name":
                raise BadRequest(
                    f"field selector {text!r}: field {field!r} is not supported, "
                    "only metadata.name"
                )
            if selector.name is not None:
                raise BadRequest(f"field selector {text!r}: metadata.name given twice")
            selector = cls(value.strip(), op == "!=")
        return selector

    def matches(self, name: str) -> bool:
        """Tell whether an object named ``name`` is selected."""
        if self.name is None:
            return True
        return (name == self.name) != self.negated

    @property
    def single(self) -> str | None:
        """The one name this selector selects, if it selects exactly one."""
        return None if self.negated else self.name

    def __str__(self) -> str:
        if self.name is None:
            return ""
        return f"metadata.name{'!=' if self.negated else '='}{self.name}"
