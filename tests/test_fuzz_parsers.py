"""Property tests of the parsers that read untrusted input: decoders and selectors.

Whatever bytes or text come in, a parser ends (pytest-timeout guards against a
hang), fails only with its documented error, and never returns a partial
event: what it returns does not depend on how the input was cut into chunks.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.decoders import NDJSONParser, SSEParser, parse_event
from clients.errors import DecodeError
from hub.core.errors import BadRequest
from hub.core.events import Event
from hub.core.selectors import FieldSelector, LabelSelector

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# A small limit, so that oversized events are among the inputs.
LIMIT = 512

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
names = st.text(ALNUM, min_size=1, max_size=10)
event_types = st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"])


@st.composite
def event_lines(draw: st.DrawFn) -> bytes:
    """One valid event as JSON."""
    kind = draw(event_types)
    rv = str(draw(st.integers(1, 10**6)))
    obj: dict[str, Any] = {"metadata": {"name": draw(names), "resourceVersion": rv}}
    if kind == "ERROR":
        obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": 410,
            "reason": "Expired",
            "message": "too old",
        }
    return orjson.dumps({"type": kind, "object": obj})


garbage = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"\n",
            b"\r\n",
            b"\r",
            b"{",
            b"}",
            b"data:",
            b"event: ADDED",
            b"id: 7",
            b"retry: 10",
            b": comment",
            b"\xef\xbb\xbf",
            b"\x00",
            b'{"type":"ADDED"}',
            b"[]",
            b"null",
            b"x" * (LIMIT + 1),
        ]
    ),
)


@st.composite
def streams(draw: st.DrawFn, framing: str) -> bytes:
    """Valid event records mixed with garbage, in one framing."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            line = draw(event_lines())
            parts.append(
                line + b"\n" if framing == "ndjson" else b"data: " + line + b"\n\n"
            )
        else:
            parts.append(draw(garbage))
    return b"".join(parts)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def run(
    parser: NDJSONParser | SSEParser, pieces: list[bytes]
) -> tuple[list[Event], bool]:
    """Feed ``pieces``; return the events before any error, and whether one came."""
    events: list[Event] = []
    try:
        for piece in pieces:
            parser.receive(piece)
            while (event := parser.next_event()) is not None:
                events.append(event)
        parser.end()
    except DecodeError:
        return events, True
    return events, False


def make(framing: str) -> NDJSONParser | SSEParser:
    return NDJSONParser(LIMIT) if framing == "ndjson" else SSEParser(LIMIT)


@pytest.mark.parametrize("framing", ["ndjson", "sse"])
@FUZZ
@given(data=st.data())
def test_decoder_output_does_not_depend_on_chunking(framing: str, data: Any) -> None:
    """Any input, cut anywhere: the same whole events, then the same error or end."""
    stream = data.draw(st.one_of(streams(framing), st.binary(max_size=300)))
    cuts = data.draw(st.lists(st.integers(0, 10**6), max_size=12))
    whole = run(make(framing), [stream])
    assert run(make(framing), chunks(stream, cuts)) == whole
    assert run(make(framing), [stream[i : i + 1] for i in range(len(stream))]) == whole


@FUZZ
@given(stream=streams("ndjson"))
def test_ndjson_events_are_the_complete_lines(stream: bytes) -> None:
    """Every NDJSON event returned is exactly a complete line of the input."""
    events, failed = run(make("ndjson"), [stream])
    expected = []
    for line in stream.split(b"\n")[:-1]:
        if len(line) > LIMIT:
            break
        if line.strip():
            try:
                expected.append(parse_event(line, "line"))
            except DecodeError:
                break
    assert events == expected[: len(events)]
    assert failed or events == expected


@FUZZ
@given(stream=streams("sse"), cut=st.integers(0, 10**6))
def test_sse_truncated_stream_never_yields_a_partial_event(
    stream: bytes, cut: int
) -> None:
    """A stream cut short gives a prefix of the events of the whole stream."""
    whole, _ = run(make("sse"), [stream])
    short, _ = run(make("sse"), [stream[: cut % (len(stream) + 1)]])
    assert short == whole[: len(short)]


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200), event_lines()))
def test_websocket_frame_parse_gives_an_event_or_decode_error(
    data: bytes | str,
) -> None:
    """A WebSocket frame's text is an event or a DecodeError, nothing else."""
    try:
        event = parse_event(data, "frame 1")
    except DecodeError:
        return
    assert isinstance(event, Event)


# Selectors

# Keys and values in the Kubernetes label syntax, built from parts (regex
# strategies are slow to draw from).
label_keys = st.builds(
    lambda prefix, name, dot: prefix + name + dot + name[::-1],
    st.sampled_from(["", "example.com/", "a/"]),
    st.text(ALNUM + "ABC", min_size=1, max_size=4),
    st.sampled_from(["", "-", ".", "_"]),
)
label_values = st.one_of(st.just(""), st.text(ALNUM + "XY", min_size=1, max_size=5))


@st.composite
def requirements(draw: st.DrawFn) -> tuple[str, str, frozenset[str]]:
    key = draw(label_keys)
    op = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!"]))
    if op in ("in", "notin"):
        # A set of only the empty value would be written "()", which Kubernetes
        # refuses as an empty set.
        values = draw(
            st.lists(label_values, min_size=1, max_size=3)
            .map(frozenset)
            .filter(lambda found: found != frozenset({""}))
        )
    elif op in ("exists", "!"):
        values = frozenset()
    else:
        values = frozenset([draw(label_values)])
    return key, op, values


def render(key: str, op: str, values: frozenset[str]) -> str:
    if op == "exists":
        return key
    if op == "!":
        return f"!{key}"
    if op in ("in", "notin"):
        return f"{key} {op} ({','.join(sorted(values))})"
    return f"{key}{op}{next(iter(values))}"


def model(key: str, op: str, values: frozenset[str], labels: dict[str, str]) -> bool:
    """The Kubernetes meaning of one requirement, written out plainly."""
    present = key in labels
    if op == "exists":
        return present
    if op == "!":
        return not present
    if op in ("=", "==", "in"):
        return present and labels[key] in values
    return not present or labels[key] not in values


@FUZZ
@given(text=st.text(max_size=80))
def test_label_selector_parse_gives_a_selector_or_bad_request(text: str) -> None:
    """Any text is a 400 or a selector that prints and parses back the same."""
    try:
        selector = LabelSelector.parse(text)
    except BadRequest:
        return
    assert LabelSelector.parse(str(selector)) == selector


@FUZZ
@given(
    reqs=st.lists(requirements(), min_size=1, max_size=4),
    labels=st.dictionaries(label_keys, label_values, max_size=4),
)
def test_label_selector_matches_as_kubernetes_does(
    reqs: list[tuple[str, str, frozenset[str]]], labels: dict[str, str]
) -> None:
    """A well-formed selector parses and selects exactly what the plain model does."""
    selector = LabelSelector.parse(", ".join(render(*r) for r in reqs))
    assert selector.matches(labels) == all(model(*r, labels) for r in reqs)


@FUZZ
@given(text=st.text(max_size=80), name=names)
def test_field_selector_parse_gives_a_selector_or_bad_request(
    text: str, name: str
) -> None:
    """Any text parses to a field selector, or is a 400; matching never fails."""
    try:
        selector = FieldSelector.parse(text)
    except BadRequest:
        return
    assert isinstance(selector.matches(name), bool)
