"""Decoders of the three watch framings, each a sans-I/O parser plus an adapter.

Each framing has a parser that does no I/O (bytes in, events out), so that it
can be tested at every byte boundary without a socket, and an async decoder
that implements :class:`hub.core.watcher.Decoder` over a live connection:

==============  ======================  ==================================
framing         parser                  decoder
==============  ======================  ==================================
chunked NDJSON  :class:`NDJSONParser`   :class:`NDJSONDecoder` (aiohttp)
WebSocket       :func:`parse_event`     :class:`WebSocketDecoder` (websockets)
SSE             :class:`SSEParser`      :class:`SSEDecoder` (aiohttp)
==============  ======================  ==================================

A parser is fed with ``receive(data)`` and read with ``next_event()``, which
returns one event, or ``None`` when it needs more data; ``end()`` says that the
stream ended and raises :class:`~clients.errors.DecodeError` if it ended inside
an event. ``feed(data)`` does both of the first two at once.

Limits: no event may be larger than ``max_event_size`` bytes (16 MiB by
default: objects of the hub's default 3 MiB limit pass with room for JSON
escaping). A parser holds at most one event's bytes plus the unread part of the
last chunk it was given, and raises as soon as a line or record outgrows the
limit, before its end arrives. A malformed, truncated or oversized event raises
:class:`~clients.errors.DecodeError`; the events before it are all returned
first, and no partial event ever is. After an error the parser raises the same
error again: a broken stream is not resynchronised.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import CloseCode

from hub.core.events import Event

from .errors import DecodeError

__all__ = [
    "MAX_EVENT_SIZE",
    "NDJSONDecoder",
    "NDJSONParser",
    "SSEDecoder",
    "SSEParser",
    "WebSocketDecoder",
    "parse_event",
    "websocket_closed_error",
]

MAX_EVENT_SIZE = 16 * 1024 * 1024


def parse_event(data: bytes | bytearray | memoryview | str, where: str) -> Event:
    """
    Parse one event's JSON: ``{"type": T, "object": O}``.

    ``where`` names the event in error messages ("line 3", "frame 2", ...).

    Raises:
        DecodeError: ``data`` is not JSON, or not a watch event.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"malformed json in {where}: {exc}") from exc
    try:
        return Event.from_dict(value)
    except ValueError as exc:
        raise DecodeError(f"{where} is not a watch event: {exc}") from exc


class _Parser:
    """What the NDJSON and SSE parsers share: a bounded buffer and their state."""

    def __init__(self, max_event_size: int = MAX_EVENT_SIZE) -> None:
        self.max_event_size = max_event_size
        self._buffer = bytearray()
        # Bytes before _start are consumed; the bytes in [_start, _scan) hold no
        # line end, so that a long line is scanned once, not once per chunk.
        self._start = 0
        self._scan = 0
        self._ended = False
        self._error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        """The number of bytes received and not yet consumed."""
        return len(self._buffer) - self._start

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """
        Buffer ``data``, the next bytes of the stream.

        Raises:
            RuntimeError: the stream has ended already.
        """
        if self._ended:
            raise RuntimeError("receive after the end of the stream")
        if self._start:
            del self._buffer[: self._start]
            self._scan -= self._start
            self._start = 0
        self._buffer += data

    def next_event(self) -> Event | None:
        """
        Return the next complete event, or ``None`` until more data arrives.

        Raises:
            DecodeError: the next event is malformed or oversized.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except DecodeError as exc:
            self._error = exc
            raise

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """
        Buffer ``data`` and return every event that is complete now.

        Raises:
            DecodeError: an event is malformed or oversized. The events before
                it in this call are lost with the error; call :meth:`receive`
                and :meth:`next_event` to have each one before the error.
        """
        self.receive(data)
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def end(self) -> None:
        """
        Mark the end of the stream; check that it ended between events.

        Call it once :meth:`next_event` has returned ``None``: the events still
        buffered are lost if it raises.

        Raises:
            DecodeError: the stream ended inside an event.
        """
        if self._error is not None:
            raise self._error
        self._ended = True
        try:
            self._check_end()
        except DecodeError as exc:
            self._error = exc
            raise

    def _oversized(self, what: str, size: int) -> DecodeError:
        return DecodeError(
            f"{what} is {size} bytes or more, above the maximum event size "
            f"of {self.max_event_size} bytes"
        )

    def _next_event(self) -> Event | None:
        raise NotImplementedError

    def _check_end(self) -> None:
        raise NotImplementedError


class NDJSONParser(_Parser):
    """
    Parse newline-delimited JSON: one event per line, as chunked HTTP sends it.

    Lines end with LF; a CR before it is allowed. Blank lines are skipped. A
    line longer than ``max_event_size`` bytes raises
    :class:`~clients.errors.DecodeError` as soon as that many bytes of it are
    buffered.
    """

    def __init__(self, max_event_size: int = MAX_EVENT_SIZE) -> None:
        super().__init__(max_event_size)
        self._line = 0

    def _next_event(self) -> Event | None:
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", self._scan)
            if end < 0:
                self._scan = len(buffer)
                if self._scan - self._start > self.max_event_size:
                    raise self._oversized(f"line {self._line + 1}", self.buffered)
                return None
            line = bytes(buffer[self._start : end])
            self._start = self._scan = end + 1
            self._line += 1
            if len(line) > self.max_event_size:
                raise self._oversized(f"line {self._line}", len(line))
            if line.strip():
                return parse_event(line, f"line {self._line}")

    def _check_end(self) -> None:
        last = self._buffer.rfind(b"\n", self._start)
        if self._buffer[max(last + 1, self._start) :].strip():
            raise DecodeError(
                f"truncated stream: it ended inside line {self._line + 1}, "
                f"after {self.buffered} bytes of it"
            )


# A line ends with CRLF, LF or CR (WHATWG HTML, "Parsing an event stream").
_LINE_END = re.compile(rb"[\r\n]")
_BOM = b"\xef\xbb\xbf"


class SSEParser(_Parser):
    """
    Parse a ``text/event-stream`` as the WHATWG HTML standard describes.

    Records are made of ``field: value`` lines (CRLF, LF or CR line ends) and
    end with a blank line; lines that start with ``:`` are comments. A record's
    ``data`` lines, joined with LF, must be one watch event; its ``event``
    field, if any, must be that event's type. ``id`` sets
    :attr:`last_event_id` (kept across records, as the standard says) and
    ``retry`` sets :attr:`retry`. A record without data is no event.

    A record whose bytes exceed ``max_event_size`` raises
    :class:`~clients.errors.DecodeError`, as does a stream that ends inside a
    record.

    Attributes:
        last_event_id: The last ``id`` received, as of the last record read;
            send it as ``Last-Event-ID`` to resume.
        retry: The reconnection time in milliseconds the server asked for,
            or ``None``.
    """

    def __init__(self, max_event_size: int = MAX_EVENT_SIZE) -> None:
        super().__init__(max_event_size)
        self.last_event_id = ""
        self.retry: int | None = None
        self._bom_checked = False
        self._skip_lf = False  # the last line ended with a CR, maybe of a CRLF
        self._record = 0
        self._reset_record()

    def _reset_record(self) -> None:
        self._data: list[bytes] = []
        self._data_size = 0
        self._type: str | None = None
        self._id: str | None = None
        self._pending = False  # the record has a field already

    def _next_event(self) -> Event | None:
        while (line := self._next_line()) is not None:
            if not line:
                event = self._dispatch()
                if event is not None:
                    return event
            elif not line.startswith(b":"):
                self._field(line)
        return None

    def _next_line(self) -> bytes | None:
        buffer = self._buffer
        if not self._bom_checked:
            head = bytes(buffer[self._start : self._start + len(_BOM)])
            if len(head) < len(_BOM) and _BOM.startswith(head) and not self._ended:
                return None
            if head == _BOM:
                self._start = self._scan = self._start + len(_BOM)
            self._bom_checked = True
        if self._skip_lf and self._start < len(buffer):
            if buffer[self._start] == 0x0A:
                self._start = self._scan = self._start + 1
            self._skip_lf = False

        match = _LINE_END.search(buffer, self._scan)
        if match is None:
            self._scan = len(buffer)
            self._check_size(self.buffered)
            return None
        end = match.start()
        self._check_size(end - self._start)
        line = bytes(buffer[self._start : end])
        if buffer[end] == 0x0D:
            if end + 1 < len(buffer):
                if buffer[end + 1] == 0x0A:
                    end += 1
            else:
                self._skip_lf = True
        self._start = self._scan = end + 1
        return line

    def _check_size(self, line_size: int) -> None:
        size = self._data_size + line_size
        if size > self.max_event_size:
            raise self._oversized(f"record {self._record + 1}", size)

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        self._pending = True
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
        elif name == b"event":
            self._type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self.retry = int(value)
        # Other fields are ignored, as the standard says.

    def _dispatch(self) -> Event | None:
        if not self._pending:
            return None
        self._record += 1
        data, kind, id_ = self._data, self._type, self._id
        self._reset_record()
        if id_ is not None:
            self.last_event_id = id_
        if not data:
            return None
        where = f"record {self._record}"
        event = parse_event(b"\n".join(data), where)
        if kind and kind != "message" and kind != event.type.value:
            raise DecodeError(
                f"{where} has event field {kind!r} but an event of type "
                f"{event.type.value}"
            )
        return event

    def _check_end(self) -> None:
        tail = self._buffer[self._start :]
        if self._pending or (tail and not tail.startswith(b":")):
            raise DecodeError(
                f"truncated stream: it ended inside record {self._record + 1}"
            )


class _HTTPDecoder:
    """A decoder that reads an aiohttp response's body through a parser."""

    def __init__(self, response: aiohttp.ClientResponse, parser: _Parser) -> None:
        self._response = response
        self._parser = parser
        self._eof = False
        self._closed = False

    @property
    def response(self) -> aiohttp.ClientResponse:
        """The response whose body this decoder reads."""
        return self._response

    async def decode(self) -> Event | None:
        """
        Return the next event, or ``None`` at the clean end of the stream.

        Reads the body only until the next event is complete, and no further.

        Raises:
            DecodeError: the stream is malformed, truncated, oversized, or
                broken by the peer.
        """
        while (event := self._parser.next_event()) is None:
            if self._eof or self._closed:
                return None
            data = await self._read()
            if self._closed:
                return None
            if data:
                self._parser.receive(data)
            else:
                self._eof = True
                self._parser.end()
        return event

    async def _read(self) -> bytes:
        try:
            return await self._response.content.readany()
        except aiohttp.ClientPayloadError as exc:
            if self._closed:
                return b""
            raise DecodeError(f"truncated stream: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if self._closed:  # closed by us: the end of the stream
                return b""
            raise DecodeError(f"stream broken: {exc!r}") from exc

    async def close(self) -> None:
        """Close the response; a pending :meth:`decode` returns ``None``."""
        self._closed = True
        self._response.close()


class NDJSONDecoder(_HTTPDecoder):
    """
    Decode a chunked HTTP watch: one JSON event per line.

    Takes ownership of ``response`` (an aiohttp response whose status was
    checked already) and closes it in :meth:`close`. See :class:`NDJSONParser`
    for the limits.
    """

    def __init__(
        self, response: aiohttp.ClientResponse, max_event_size: int = MAX_EVENT_SIZE
    ) -> None:
        super().__init__(response, NDJSONParser(max_event_size))


class SSEDecoder(_HTTPDecoder):
    """
    Decode a Server-Sent Events watch: one watch event per record.

    Takes ownership of ``response`` and closes it in :meth:`close`. See
    :class:`SSEParser` for the format and the limits.
    """

    def __init__(
        self, response: aiohttp.ClientResponse, max_event_size: int = MAX_EVENT_SIZE
    ) -> None:
        self._sse = SSEParser(max_event_size)
        super().__init__(response, self._sse)

    @property
    def last_event_id(self) -> str:
        """The last event id received, up to the last event decoded."""
        return self._sse.last_event_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in milliseconds the server asked for, if any."""
        return self._sse.retry


def websocket_closed_error(exc: ConnectionClosed, frames: int) -> DecodeError:
    """
    Return the error of a WebSocket watch that closed uncleanly after ``frames``.

    Shared by the async and the sync clients, whose connections raise the same
    ``ConnectionClosed``.
    """
    sent, rcvd = exc.sent, exc.rcvd
    if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
        return DecodeError(
            f"frame {frames + 1} is above the maximum event size: {sent}"
        )
    if rcvd is None:
        return DecodeError(
            "truncated stream: the websocket connection closed without "
            f"a close frame after frame {frames}"
        )
    return DecodeError(f"websocket closed with an error: {exc}")


class WebSocketDecoder:
    """
    Decode a WebSocket watch: one JSON event per text frame.

    Takes ownership of ``connection`` and closes it in :meth:`close`. A close
    with code 1000 or 1001 is the clean end of the stream; any other end, a
    binary frame or a frame that is not an event raises
    :class:`~clients.errors.DecodeError`. The size of an event is bounded by
    the connection's ``max_size``: open it with ``max_size=MAX_EVENT_SIZE``,
    since the websockets library defaults to 1 MiB, and with a small
    ``max_queue`` (the client uses 1) so that the library does not hold many
    such events for a slow consumer.
    """

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self._frame = 0
        self._closed = False

    @property
    def connection(self) -> ClientConnection:
        """The connection this decoder reads."""
        return self._connection

    async def decode(self) -> Event | None:
        """
        Return the next event, or ``None`` when the connection closed cleanly.

        Raises:
            DecodeError: a frame is binary or not an event, or the connection
                closed with an error code, without a close frame, or because
                a frame was above ``max_size``.
        """
        try:
            message: Any = await self._connection.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            if self._closed:
                return None
            raise self._broken(exc) from exc
        self._frame += 1
        where = f"frame {self._frame}"
        if not isinstance(message, str):
            raise DecodeError(f"{where} is a binary frame; events come in text frames")
        return parse_event(message, where)

    def _broken(self, exc: ConnectionClosed) -> DecodeError:
        return websocket_closed_error(exc, self._frame)

    async def close(self) -> None:
        """Close the connection with code 1000; a pending :meth:`decode` ends."""
        self._closed = True
        await self._connection.close()
