"""Label and field selectors: every form, set semantics, and malformed input."""

from __future__ import annotations

import pytest

from hub.core.errors import BadRequest
from hub.core.selectors import FieldSelector, LabelSelector

LABELS = {"app": "web", "tier": "front", "env": ""}

CASES = [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app=db", False),
    ("app!=db", True),
    ("app!=web", False),
    ("missing!=x", True),
    ("app in (web,db)", True),
    ("app in (db)", False),
    ("app notin (db,cache)", True),
    ("app notin (web)", False),
    ("missing notin (x)", True),
    ("missing in (x)", False),
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("app=web,tier=front", True),
    ("app=web,tier=back", False),
    ("app = web , tier in ( front , back )", True),
    ("env=", True),
    ("env==", True),
    ("app=", False),
    ("env in (,x)", True),
    ("example.com/role", False),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_label_selector_forms(text: str, expected: bool) -> None:
    """Each form of the Kubernetes syntax selects as Kubernetes does."""
    assert LabelSelector.parse(text).matches(LABELS) is expected


@pytest.mark.parametrize("text", ["app=web,tier in (front)", "!a", "a notin (x,y)"])
def test_label_selector_round_trips(text: str) -> None:
    """A parsed selector prints as one that parses to the same selector."""
    selector = LabelSelector.parse(text)
    assert LabelSelector.parse(str(selector)) == selector


BAD = [
    "app in (web",
    "app in web",
    "app=web,",
    ",app",
    "=web",
    "app=we b",
    "app=(web)",
    "a!b",
    "Bad Key=x",
    "app in (a b)",
    "app=" + "v" * 64,
    "-app=x",
    "app notin",
    "app in ()",
    "app notin ( )",
    "!",
    "app=web)",
]


@pytest.mark.parametrize("text", BAD)
def test_malformed_label_selector_is_bad_request(text: str) -> None:
    """A malformed selector raises BadRequest with the selector in the message."""
    with pytest.raises(BadRequest) as caught:
        LabelSelector.parse(text)
    assert caught.value.code == 400


def test_field_selector_on_name() -> None:
    """metadata.name with =, == and != selects by name."""
    assert FieldSelector.parse("metadata.name=a").matches("a")
    assert not FieldSelector.parse("metadata.name==a").matches("b")
    assert FieldSelector.parse("metadata.name!=a").matches("b")
    assert FieldSelector.parse("metadata.name=a").single == "a"
    assert FieldSelector.parse("metadata.name!=a").single is None
    assert FieldSelector.parse("").matches("anything")


@pytest.mark.parametrize(
    "text", ["spec.x=1", "metadata.name", "metadata.name=a,metadata.name=b", "x"]
)
def test_malformed_field_selector_is_bad_request(text: str) -> None:
    """Other fields, no operator, or the name twice are 400 BadRequest."""
    with pytest.raises(BadRequest):
        FieldSelector.parse(text)
