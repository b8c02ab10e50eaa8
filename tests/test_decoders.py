"""The clients' decoders: the sans-I/O parsers byte by byte, then over real sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import websockets.asyncio.client
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from clients import (
    MAX_EVENT_SIZE,
    DecodeError,
    Decoder,
    NDJSONDecoder,
    NDJSONParser,
    SSEDecoder,
    SSEParser,
    StreamWatcher,
    WebSocketDecoder,
    parse_event,
)
from hub.core import codec
from hub.core.events import Event, EventType

# One unit of waiting, stretched on slow machines with WATCHHUB_TEST_TIMEOUT_FACTOR.
TIMEOUT = 10.0 * float(os.environ.get("WATCHHUB_TEST_TIMEOUT_FACTOR", "1"))

MiB = 1024 * 1024


# Events and the streams that carry them


def _object(name: str, rv: int, **fields: Any) -> dict[str, Any]:
    metadata = {"name": name, "resourceVersion": str(rv), "labels": {"app": "web"}}
    return {"metadata": metadata, **fields}


# A multi-KB object with unicode (two-, three- and four-byte UTF-8), quotes,
# backslashes and an escaped newline, so that cuts fall inside characters.
BIG = _object(
    "big",
    2,
    spec={"blob": 'é✓🚀"\\\n ' * 300 + "x" * 1000, "note": "ünïcödé"},
)

EVENTS = [
    Event(EventType.ADDED, _object("web", 1)),
    Event(EventType.MODIFIED, BIG),
    Event(EventType.BOOKMARK, {"metadata": {"resourceVersion": "3"}}),
    Event(EventType.DELETED, _object("db", 4, data={"greeting": "grüß dich, 世界"})),
    Event(
        EventType.ERROR,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": "too old resource version: 1 (4)",
            "reason": "Expired",
            "code": 410,
        },
    ),
]


@dataclass
class Stream:
    """A framed stream of EVENTS, and where a parser may see each one end."""

    data: bytes
    # The position at which each event becomes complete.
    completes: list[int] = field(default_factory=list)
    # The positions at which the stream may end cleanly.
    clean: set[int] = field(default_factory=lambda: {0})

    def add(self, record: bytes, line_end: bytes = b"\n", prefix: int = 0) -> None:
        """Append one event's record, ending with ``line_end``."""
        start = len(self.data)
        self.data += record
        end = len(self.data)
        self.completes.append(end - len(line_end) + 1)
        self.clean.update(range(end - len(line_end) + 1, end + 1))
        # A record may start with lines that are no event yet (comments).
        self.clean.update(range(start, start + prefix + 1))


def ndjson_stream(line_end: bytes = b"\n") -> Stream:
    """Return EVENTS as NDJSON lines, framed by the hub's own codec."""
    stream = Stream(b"")
    for event in EVENTS:
        line = codec.frame_event(event.type.value, event.object, codec.NDJSON)
        stream.add(line[:-1] + line_end, b"\n")
    return stream


def sse_stream(
    line_end: bytes = b"\n", *, comments: bool = False, multiline: bool = False
) -> Stream:
    """Return EVENTS as SSE records, with the given line ends and extras."""
    stream = Stream(b"")
    for event in EVENTS:
        prefix = b""
        if comments:
            prefix = b": keep-alive" + line_end + b":" + line_end
        lines = []
        if event.resource_version:
            lines.append(b"id: " + event.resource_version.encode())
        lines.append(b"event: " + event.type.value.encode())
        body = orjson.dumps(event.to_dict())
        if multiline:  # split the JSON where whitespace may go
            body = body.replace(b',"object":', b',\n"object":\n', 1)
        lines.extend(b"data: " + part for part in body.split(b"\n"))
        if comments:
            lines.insert(1, b": between fields")
            lines.append(b"retry: 3000")
            lines.append(b"x-unknown-field: ignored")
        record = prefix + line_end.join(lines) + line_end + line_end
        stream.add(record, line_end, prefix=len(prefix))
    return stream


def hub_sse_stream() -> Stream:
    """Return EVENTS as SSE records framed by the hub's own codec."""
    stream = Stream(b"")
    for event in EVENTS:
        rv = event.resource_version
        stream.add(
            codec.frame_event(event.type.value, event.object, codec.SSE, rv), b"\n"
        )
    return stream


STREAMS: dict[str, Callable[[], Stream]] = {
    "ndjson": ndjson_stream,
    "ndjson-crlf": lambda: ndjson_stream(b"\r\n"),
    "sse": hub_sse_stream,
    "sse-crlf": lambda: sse_stream(b"\r\n"),
    "sse-cr": lambda: sse_stream(b"\r"),
    "sse-comments-multiline": lambda: sse_stream(comments=True, multiline=True),
    "sse-comments-multiline-crlf": lambda: sse_stream(
        b"\r\n", comments=True, multiline=True
    ),
}

Parser = NDJSONParser | SSEParser


def make_parser(name: str, max_event_size: int = MAX_EVENT_SIZE) -> Parser:
    """Return a new parser for the framing of stream ``name``."""
    if name.startswith("ndjson"):
        return NDJSONParser(max_event_size)
    return SSEParser(max_event_size)


def feed_all(parser: Parser, chunks: list[bytes]) -> list[Event]:
    """Feed every chunk, end the stream, and return the events."""
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    parser.end()
    return events


# The parsers, at every byte boundary


@pytest.mark.parametrize("name", STREAMS)
def test_parser_split_at_every_byte_yields_every_event(name: str) -> None:
    """A stream cut in two at any byte decodes to exactly its events."""
    data = STREAMS[name]().data
    for cut in range(len(data) + 1):
        parser = make_parser(name)
        assert feed_all(parser, [data[:cut], data[cut:]]) == EVENTS, f"cut at {cut}"


@pytest.mark.parametrize("name", STREAMS)
def test_parser_fed_one_byte_at_a_time_yields_every_event(name: str) -> None:
    """A stream fed one byte at a time decodes to exactly its events."""
    data = STREAMS[name]().data
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert feed_all(make_parser(name), chunks) == EVENTS


@pytest.mark.parametrize("name", STREAMS)
@settings(max_examples=50, database=None, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=40))
def test_parser_fed_any_chunks_yields_every_event(name: str, cuts: list[int]) -> None:
    """A stream fed in arbitrary chunks decodes to exactly its events."""
    data = STREAMS[name]().data
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert feed_all(make_parser(name), chunks) == EVENTS


@pytest.mark.parametrize("name", STREAMS)
def test_parser_truncated_anywhere_gives_whole_events_then_error(name: str) -> None:
    """A stream cut anywhere yields only whole events, then raises if inside one."""
    stream = STREAMS[name]()
    for cut in range(len(stream.data) + 1):
        parser = make_parser(name)
        events = parser.feed(stream.data[:cut])
        complete = sum(1 for position in stream.completes if position <= cut)
        assert events == EVENTS[:complete], f"cut at {cut}"
        if cut in stream.clean:
            parser.end()
        else:
            with pytest.raises(DecodeError, match="truncated"):
                parser.end()


def test_parser_feed_returns_event_as_soon_as_its_line_ends() -> None:
    """An event is returned by the feed that completes it, not a later one."""
    parser = NDJSONParser()
    line = codec.frame_event("ADDED", _object("web", 1), codec.NDJSON)
    assert parser.feed(line[:-1]) == []
    assert parser.feed(b"\n") == [EVENTS[0]]


# NDJSON


def test_ndjson_blank_lines_are_skipped() -> None:
    """Blank and whitespace-only lines between events are skipped."""
    line = codec.frame_event("ADDED", _object("web", 1), codec.NDJSON)
    parser = NDJSONParser()
    assert parser.feed(b"\n \r\n" + line + b"\t\n\n" + line) == [EVENTS[0]] * 2
    parser.end()


def test_ndjson_whitespace_tail_is_a_clean_end() -> None:
    """A stream that ends with whitespace but no newline ends cleanly."""
    parser = NDJSONParser()
    assert parser.feed(b"\n  ") == []
    parser.end()


def test_ndjson_malformed_line_raises_after_the_events_before_it() -> None:
    """A malformed line raises, after every event before it is returned."""
    line = codec.frame_event("ADDED", _object("web", 1), codec.NDJSON)
    parser = NDJSONParser()
    parser.receive(line + b'{"type": "ADDED", "object": \n' + line)
    assert parser.next_event() == EVENTS[0]
    with pytest.raises(DecodeError, match="malformed json in line 2"):
        parser.next_event()
    with pytest.raises(DecodeError, match="line 2"):
        parser.next_event()  # a broken stream stays broken
    with pytest.raises(DecodeError, match="line 2"):
        parser.end()


@pytest.mark.parametrize(
    "line",
    [
        b"[1, 2]",
        b'"ADDED"',
        b"null",
        b'{"type": "ADDED"}',
        b'{"type": "ADDED", "object": [1]}',
        b'{"type": "RENAMED", "object": {}}',
        b'{"object": {}}',
    ],
)
def test_ndjson_json_that_is_not_an_event_raises(line: bytes) -> None:
    """A line of valid JSON that is no watch event raises DecodeError."""
    with pytest.raises(DecodeError, match="line 1 is not a watch event"):
        NDJSONParser().feed(line + b"\n")


def test_ndjson_invalid_utf8_raises() -> None:
    """A line that is not UTF-8 raises DecodeError."""
    with pytest.raises(DecodeError, match="malformed json"):
        NDJSONParser().feed(b'{"type": "ADDED", "object": {"a": "\xff"}}\n')


def test_ndjson_line_at_the_limit_passes() -> None:
    """A line of exactly max_event_size bytes is accepted."""
    line = codec.frame_event("ADDED", _object("web", 1), codec.NDJSON)
    parser = NDJSONParser(max_event_size=len(line) - 1)
    assert parser.feed(line) == [EVENTS[0]]


def test_ndjson_complete_line_above_the_limit_raises() -> None:
    """A complete line one byte above max_event_size raises DecodeError."""
    line = codec.frame_event("ADDED", _object("web", 1), codec.NDJSON)
    parser = NDJSONParser(max_event_size=len(line) - 2)
    with pytest.raises(DecodeError, match="line 1 is .* above the maximum event size"):
        parser.feed(line)


def test_ndjson_oversized_line_raises_before_its_end_arrives() -> None:
    """An endless line raises once it outgrows the limit; the buffer stays bounded."""
    parser = NDJSONParser(max_event_size=1000)
    parser.feed(codec.frame_event("ADDED", _object("web", 1), codec.NDJSON))
    parser.feed(b'{"type": "ADDED", "object": {"blob": "')
    with pytest.raises(DecodeError, match="line 2 is 1001 bytes or more"):
        for _ in range(2000):
            parser.feed(b"x")
            assert parser.buffered <= 1000


def test_parser_receive_after_end_is_refused() -> None:
    """Data after the end of the stream is a programming error."""
    parser = NDJSONParser()
    parser.end()
    with pytest.raises(RuntimeError, match="after the end"):
        parser.receive(b"\n")


@pytest.mark.parametrize("name", ["ndjson", "sse"])
@pytest.mark.parametrize("chunk_size", [None, 64 * 1024])
def test_parser_passes_a_3_mib_object(name: str, chunk_size: int | None) -> None:
    """An object of the hub's default 3 MiB limit passes with the default limit."""
    blob = ('ü"\\\t' * (3 * MiB // 8))[: 3 * MiB // 2]
    obj = _object("huge", 7, spec={"blob": blob})
    framing = codec.NDJSON if name == "ndjson" else codec.SSE
    data = codec.frame_event("ADDED", obj, framing, "7")
    assert len(data) > 3 * MiB
    size = chunk_size or len(data)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert feed_all(make_parser(name), chunks) == [Event(EventType.ADDED, obj)]


# SSE


def test_sse_tracks_the_last_event_id_per_event() -> None:
    """last_event_id is the id of the last record read, not of later ones."""
    parser = SSEParser()
    parser.receive(hub_sse_stream().data)
    ids = []
    while (event := parser.next_event()) is not None:
        ids.append((event.type, parser.last_event_id))
    assert ids == [
        (EventType.ADDED, "1"),
        (EventType.MODIFIED, "2"),
        (EventType.BOOKMARK, "3"),
        (EventType.DELETED, "4"),
        (EventType.ERROR, "4"),  # no id: the last one stays, per the standard
    ]


def test_sse_record_without_data_sets_the_id_but_is_no_event() -> None:
    """A record with only an id updates last_event_id and yields nothing."""
    parser = SSEParser()
    assert parser.feed(b"id: 42\n\n: comment\n\n") == []
    assert parser.last_event_id == "42"
    assert parser.feed(b"id\n\n") == []
    assert parser.last_event_id == ""


def test_sse_field_forms_follow_the_standard() -> None:
    """No space after the colon, a BOM, retry, NUL in id and unknown fields work."""
    parser = SSEParser()
    body = orjson.dumps(EVENTS[0].to_dict())
    data = (
        b"\xef\xbb\xbf"
        + b"retry: 2500\nid: a\0b\nfoo: bar\nevent:ADDED\ndata:"
        + body
        + b"\n\n"
    )
    assert feed_all(parser, [data[i : i + 1] for i in range(len(data))]) == EVENTS[:1]
    assert parser.retry == 2500
    assert parser.last_event_id == ""  # an id with NUL is ignored


def test_sse_multiline_data_is_joined_with_newlines() -> None:
    """Data lines are joined with LF into one event's JSON."""
    parser = SSEParser()
    data = b'data: {"type": "ADDED",\ndata:  "object":\ndata: {}}\n\n'
    assert parser.feed(data) == [Event(EventType.ADDED, {})]


def test_sse_event_field_that_disagrees_with_the_data_raises() -> None:
    """An event field other than the data's type raises DecodeError."""
    body = orjson.dumps(EVENTS[0].to_dict())
    with pytest.raises(DecodeError, match="event field 'DELETED'"):
        SSEParser().feed(b"event: DELETED\ndata: " + body + b"\n\n")


def test_sse_default_event_type_is_accepted() -> None:
    """A record with event: message, or none, takes its type from the data."""
    body = orjson.dumps(EVENTS[0].to_dict())
    parser = SSEParser()
    events = parser.feed(
        b"event: message\ndata: " + body + b"\n\ndata: " + body + b"\n\n"
    )
    assert events == EVENTS[:1] * 2


@pytest.mark.parametrize(
    "data",
    [b"data: {oops\n\n", b"data: [1]\n\n", b"data: {}\n\n", b"data:\n\n"],
)
def test_sse_data_that_is_not_an_event_raises(data: bytes) -> None:
    """A record whose data is malformed or no event raises DecodeError."""
    with pytest.raises(DecodeError, match="record 1"):
        SSEParser().feed(data)


def test_sse_partial_comment_at_the_end_is_a_clean_end() -> None:
    """A stream that stops inside a comment line loses no event."""
    parser = SSEParser()
    assert parser.feed(b": keep-al") == []
    parser.end()


def test_sse_record_without_its_blank_line_is_truncated() -> None:
    """A record whose blank line never comes raises rather than dispatching."""
    body = orjson.dumps(EVENTS[0].to_dict())
    parser = SSEParser()
    assert parser.feed(b"data: " + body + b"\n") == []
    with pytest.raises(DecodeError, match="truncated stream: it ended inside record 1"):
        parser.end()


def test_sse_oversized_record_raises() -> None:
    """Data lines whose sum exceeds the limit raise, each line under it or not."""
    parser = SSEParser(max_event_size=1000)
    with pytest.raises(DecodeError, match="record 1 is .* above the maximum"):
        for _ in range(100):
            parser.feed(b"data: " + b"x" * 50 + b"\n")


def test_sse_oversized_line_raises_before_its_end_arrives() -> None:
    """An endless data line raises once it outgrows the limit."""
    parser = SSEParser(max_event_size=1000)
    parser.feed(b"data: ")
    with pytest.raises(DecodeError, match="above the maximum event size"):
        for _ in range(2000):
            parser.feed(b"x")
            assert parser.buffered <= 1000


def test_sse_comments_do_not_count_towards_the_limit() -> None:
    """Many comment lines in one record do not make it oversized."""
    parser = SSEParser(max_event_size=1000)
    body = orjson.dumps(EVENTS[0].to_dict())
    assert parser.feed(b": ping\n" * 1000 + b"data: " + body + b"\n\n") == EVENTS[:1]


# WebSocket messages


def test_parse_event_reads_a_text_frame() -> None:
    """A text frame's JSON is one event."""
    text = codec.frame_event("MODIFIED", BIG, codec.WS).decode()
    assert parse_event(text, "frame 1") == EVENTS[1]


def test_parse_event_rejects_json_that_is_no_event() -> None:
    """A frame of JSON without a type and an object raises DecodeError."""
    with pytest.raises(DecodeError, match="frame 3 is not a watch event"):
        parse_event('{"kind": "Status"}', "frame 3")


# Servers for the async decoders


@dataclass(frozen=True)
class Abort:
    """A step that drops the connection without ending the stream."""


@dataclass(frozen=True)
class Close:
    """A step that closes a WebSocket with a code."""

    code: int


Step = bytes | str | asyncio.Event | Abort | Close
Serve = Callable[
    [Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[URL]
]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve a request handler on a free port of the loopback; return its URL."""
    servers: list[TestServer] = []

    async def start(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> URL:
        app = web.Application()
        app.router.add_get("/", handler)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server(shutdown_timeout=TIMEOUT)
        servers.append(server)
        return server.make_url("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session without a total timeout, as watches need."""
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def http_handler(
    steps: list[Step], content_type: str = "application/json;stream=watch"
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Return a handler that streams ``steps``: bytes, gates to wait on, an abort."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            for step in steps:
                if isinstance(step, asyncio.Event):
                    await asyncio.wait_for(step.wait(), TIMEOUT)
                elif isinstance(step, Abort):
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                else:
                    assert isinstance(step, bytes)
                    await response.write(step)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away first, as some tests make it
        return response

    return handler


def ws_handler(
    steps: list[Step],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Return a handler that sends ``steps`` as WebSocket frames, then closes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for step in steps:
            if isinstance(step, asyncio.Event):
                if not await _wait_unless_closed(ws, step):
                    return ws
            elif isinstance(step, Abort):
                assert request.transport is not None
                request.transport.abort()
                return ws
            elif isinstance(step, Close):
                await ws.close(code=step.code)
                return ws
            elif isinstance(step, str):
                await ws.send_str(step)
            else:
                await ws.send_bytes(step)
        await ws.close()
        return ws

    return handler


async def _wait_unless_closed(ws: web.WebSocketResponse, gate: asyncio.Event) -> bool:
    """Wait for ``gate``; answer a close from the client meanwhile (then False)."""
    receive = asyncio.ensure_future(ws.receive())
    opened = asyncio.ensure_future(gate.wait())
    done, pending = await asyncio.wait(
        {receive, opened}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return opened in done and receive not in done


def chunks_of(data: bytes, size: int) -> list[Step]:
    """Cut ``data`` into chunks of ``size`` bytes, as server writes."""
    return [data[i : i + size] for i in range(0, len(data), size)]


class ProbedDecoder:
    """A decoder that tells when a read is pending in it."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.decoding = asyncio.Event()
        self.closed = False

    async def decode(self) -> Event | None:
        """Note that a read started, then read."""
        self.decoding.set()
        return await self.decoder.decode()

    async def close(self) -> None:
        """Close the wrapped decoder."""
        self.closed = True
        await self.decoder.close()


async def collect(watcher: StreamWatcher) -> list[Event]:
    """Return every event of ``watcher`` until it ends."""
    return [event async for event in watcher]


async def next_event(watcher: StreamWatcher) -> Event:
    """Return the watcher's next event, failing the test after the deadline."""
    return await asyncio.wait_for(anext(watcher), TIMEOUT)


# NDJSONDecoder over HTTP


async def test_ndjson_decoder_reads_events_written_in_odd_chunks(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Events written in 7-byte chunks come out whole, then the stream ends."""
    url = await serve(http_handler(chunks_of(ndjson_stream().data, 7)))
    decoder = NDJSONDecoder(await session.get(url))
    async with StreamWatcher(decoder) as watcher:
        events = await asyncio.wait_for(collect(watcher), TIMEOUT)
    assert events == EVENTS
    assert decoder.response.closed


async def test_ndjson_decoder_stream_ending_inside_a_line_raises(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A response that ends cleanly inside a line raises after the whole events."""
    data = ndjson_stream().data
    url = await serve(http_handler([data[: len(data) - 10]]))
    async with StreamWatcher(NDJSONDecoder(await session.get(url))) as watcher:
        events = []
        with pytest.raises(
            DecodeError, match="truncated stream: it ended inside line 5"
        ):
            async for event in watcher:
                events.append(event)
    assert events == EVENTS[:4]


async def test_ndjson_decoder_dropped_connection_raises(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A connection dropped inside a chunked stream raises DecodeError."""
    data = ndjson_stream().data
    url = await serve(http_handler([data[:100], Abort()]))
    async with StreamWatcher(NDJSONDecoder(await session.get(url))) as watcher:
        assert await next_event(watcher) == EVENTS[0]
        with pytest.raises(DecodeError, match="truncated stream"):
            await next_event(watcher)
        assert watcher.stopped


async def test_ndjson_decoder_reads_a_close_delimited_http10_body() -> None:
    """An HTTP/1.0 body that ends by closing the connection ends cleanly."""
    data = ndjson_stream().data

    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"http://127.0.0.1:{port}/")
            async with StreamWatcher(NDJSONDecoder(response)) as watcher:
                events = await asyncio.wait_for(collect(watcher), TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()
    assert events == EVENTS


async def test_ndjson_decoder_oversized_line_raises(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A line above max_event_size raises before the rest of it is read."""
    gate = asyncio.Event()
    url = await serve(
        http_handler([b'{"type": "ADDED", "object": "' + b"x" * 5000, gate])
    )
    decoder = NDJSONDecoder(await session.get(url), max_event_size=1000)
    async with StreamWatcher(decoder) as watcher:
        with pytest.raises(DecodeError, match="above the maximum event size of 1000"):
            await next_event(watcher)
    gate.set()


async def test_ndjson_decoder_close_wakes_a_pending_decode(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """close() ends a decode that is waiting for data: it returns None."""
    gate = asyncio.Event()
    url = await serve(http_handler([gate]))
    decoder = NDJSONDecoder(await session.get(url))
    probe = ProbedDecoder(decoder)
    pending = asyncio.create_task(probe.decode())
    await asyncio.wait_for(probe.decoding.wait(), TIMEOUT)
    await decoder.close()
    assert await asyncio.wait_for(pending, TIMEOUT) is None
    gate.set()


# StreamWatcher over a real stream


async def test_stream_watcher_returns_each_event_before_the_next_is_sent(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The watcher hands over event 1 while the server still holds back event 2."""
    data = ndjson_stream().data
    first = data.index(b"\n") + 1
    gate = asyncio.Event()
    url = await serve(http_handler([data[:first], gate, data[first:]]))
    async with StreamWatcher(NDJSONDecoder(await session.get(url))) as watcher:
        assert await next_event(watcher) == EVENTS[0]
        assert not gate.is_set()
        gate.set()
        assert await asyncio.wait_for(collect(watcher), TIMEOUT) == EVENTS[1:]


async def test_stream_watcher_stop_unblocks_a_pending_reader(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """stop() ends an iteration that waits for an event, and closes the decoder."""
    gate = asyncio.Event()
    url = await serve(http_handler([ndjson_stream().data[:10], gate]))
    response = await session.get(url)
    probe = ProbedDecoder(NDJSONDecoder(response))
    watcher = StreamWatcher(probe)
    reader = asyncio.create_task(collect(watcher))
    await asyncio.wait_for(probe.decoding.wait(), TIMEOUT)

    watcher.stop()
    watcher.stop()
    assert await asyncio.wait_for(reader, TIMEOUT) == []
    await asyncio.wait_for(watcher.wait_closed(), TIMEOUT)
    assert watcher.stopped
    assert probe.closed
    assert response.closed
    watcher.stop()
    gate.set()


async def test_stream_watcher_stopped_before_iteration_yields_nothing(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A watcher stopped before its first read yields no event and closes."""
    url = await serve(http_handler([ndjson_stream().data]))
    response = await session.get(url)
    watcher = StreamWatcher(NDJSONDecoder(response))
    watcher.stop()
    assert await asyncio.wait_for(collect(watcher), TIMEOUT) == []
    await asyncio.wait_for(watcher.wait_closed(), TIMEOUT)
    assert response.closed


async def test_stream_watcher_raises_decoder_errors_then_ends(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A malformed line reaches the consumer after the events before it."""
    line = codec.frame_event("ADDED", _object("web", 1), codec.NDJSON)
    url = await serve(http_handler([line + b"not json\n" + line]))
    response = await session.get(url)
    watcher = StreamWatcher(NDJSONDecoder(response))
    assert await next_event(watcher) == EVENTS[0]
    with pytest.raises(DecodeError, match="malformed json in line 2"):
        await next_event(watcher)
    assert watcher.stopped
    with pytest.raises(StopAsyncIteration):
        await next_event(watcher)
    await asyncio.wait_for(watcher.wait_closed(), TIMEOUT)
    assert response.closed


# SSEDecoder over HTTP


async def test_sse_decoder_reads_records_written_in_odd_chunks(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """Records with comments, CRLF and multi-line data come out whole."""
    data = sse_stream(b"\r\n", comments=True, multiline=True).data
    url = await serve(http_handler(chunks_of(data, 5), "text/event-stream"))
    decoder = SSEDecoder(await session.get(url))
    async with StreamWatcher(decoder) as watcher:
        assert await next_event(watcher) == EVENTS[0]
        assert decoder.last_event_id == "1"
        assert await asyncio.wait_for(collect(watcher), TIMEOUT) == EVENTS[1:]
    assert decoder.last_event_id == "4"
    assert decoder.retry == 3000


async def test_sse_decoder_truncated_record_raises(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """A response that ends inside a record raises after the whole records."""
    data = hub_sse_stream().data
    url = await serve(http_handler([data[:-1]], "text/event-stream"))
    async with StreamWatcher(SSEDecoder(await session.get(url))) as watcher:
        events = []
        with pytest.raises(DecodeError, match="truncated stream"):
            async for event in watcher:
                events.append(event)
    assert events == EVENTS[:4]


# WebSocketDecoder


async def ws_connect(url: URL, max_size: int = MAX_EVENT_SIZE) -> WebSocketDecoder:
    """Open a WebSocket to ``url`` and return its decoder."""
    ws_url = url.with_scheme("ws")
    connection = await websockets.asyncio.client.connect(
        str(ws_url), max_size=max_size, open_timeout=TIMEOUT
    )
    return WebSocketDecoder(connection)


def ws_frames() -> list[Step]:
    """Return EVENTS as the text frames that the hub sends."""
    frames: list[Step] = []
    for event in EVENTS:
        frames.append(
            codec.frame_event(event.type.value, event.object, codec.WS).decode()
        )
    return frames


@pytest.mark.parametrize("code", [1000, 1001])
async def test_websocket_decoder_clean_close_ends_the_stream(
    serve: Serve, code: int
) -> None:
    """Frames come out as events, and a 1000 or 1001 close ends the stream."""
    url = await serve(ws_handler([*ws_frames(), Close(code)]))
    async with StreamWatcher(await ws_connect(url)) as watcher:
        assert await asyncio.wait_for(collect(watcher), TIMEOUT) == EVENTS


async def test_websocket_decoder_error_close_raises(serve: Serve) -> None:
    """A close with code 1011 raises DecodeError after the events before it."""
    url = await serve(ws_handler([*ws_frames()[:2], Close(1011)]))
    async with StreamWatcher(await ws_connect(url)) as watcher:
        assert await next_event(watcher) == EVENTS[0]
        assert await next_event(watcher) == EVENTS[1]
        with pytest.raises(DecodeError, match="websocket closed with an error.*1011"):
            await next_event(watcher)


async def test_websocket_decoder_dropped_connection_raises(serve: Serve) -> None:
    """A connection dropped without a close frame raises DecodeError."""
    url = await serve(ws_handler([*ws_frames()[:1], Abort()]))
    async with StreamWatcher(await ws_connect(url)) as watcher:
        assert await next_event(watcher) == EVENTS[0]
        with pytest.raises(DecodeError, match="truncated stream.*after frame 1"):
            await next_event(watcher)


async def test_websocket_decoder_binary_frame_raises(serve: Serve) -> None:
    """A binary frame raises DecodeError: events come in text frames."""
    gate = asyncio.Event()
    url = await serve(ws_handler([codec.frame_event("ADDED", {}, codec.WS), gate]))
    async with StreamWatcher(await ws_connect(url)) as watcher:
        with pytest.raises(DecodeError, match="frame 1 is a binary frame"):
            await next_event(watcher)
    gate.set()


async def test_websocket_decoder_malformed_frame_raises(serve: Serve) -> None:
    """A text frame that is not JSON raises DecodeError."""
    gate = asyncio.Event()
    url = await serve(ws_handler([ws_frames()[0], "{nope", gate]))
    async with StreamWatcher(await ws_connect(url)) as watcher:
        assert await next_event(watcher) == EVENTS[0]
        with pytest.raises(DecodeError, match="malformed json in frame 2"):
            await next_event(watcher)
    gate.set()


async def test_websocket_decoder_oversized_frame_raises(serve: Serve) -> None:
    """A frame above the connection's max_size raises DecodeError."""
    url = await serve(ws_handler(ws_frames()))
    async with StreamWatcher(await ws_connect(url, max_size=1000)) as watcher:
        assert await next_event(watcher) == EVENTS[0]
        with pytest.raises(
            DecodeError, match="frame 2 is above the maximum event size"
        ):
            await next_event(watcher)


async def test_websocket_decoder_passes_a_3_mib_object(serve: Serve) -> None:
    """A 3 MiB object passes over a connection opened with MAX_EVENT_SIZE."""
    obj = _object("huge", 7, spec={"blob": "ü" * (3 * MiB // 2)})
    frame = codec.frame_event("ADDED", obj, codec.WS).decode()
    url = await serve(ws_handler([frame]))
    async with StreamWatcher(await ws_connect(url)) as watcher:
        events = await asyncio.wait_for(collect(watcher), TIMEOUT)
    assert events == [Event(EventType.ADDED, obj)]


async def test_websocket_watcher_stop_unblocks_a_pending_reader(serve: Serve) -> None:
    """stop() ends a read waiting on a silent WebSocket and closes it with 1000."""
    gate = asyncio.Event()
    url = await serve(ws_handler([gate]))
    decoder = await ws_connect(url)
    probe = ProbedDecoder(decoder)
    watcher = StreamWatcher(probe)
    reader = asyncio.create_task(collect(watcher))
    await asyncio.wait_for(probe.decoding.wait(), TIMEOUT)

    watcher.stop()
    assert await asyncio.wait_for(reader, TIMEOUT) == []
    await asyncio.wait_for(watcher.wait_closed(), TIMEOUT)
    assert decoder.connection.close_code == 1000
    gate.set()
