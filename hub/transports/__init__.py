"""The three transports of a watch, on the same URLs.

- :mod:`.chunked`: NDJSON over chunked HTTP (the default).
- :mod:`.websocket`: one event per text frame, on ``Upgrade: websocket``.
- :mod:`.sse`: Server-Sent Events, on ``Accept: text/event-stream``.

Each takes a :class:`~hub.watch.stream.WatchStream` and differs from the
others only in framing and liveness.
"""
