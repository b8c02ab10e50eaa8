"""The ``watchhub`` command line: serve a hub, and read, write and watch one.

::

    watchhub serve [--port 8080] [--store sqlite|memory|nats://HOST:PORT]
                   [--data watchhub.db] [--nats-bucket watchhub]
    watchhub get COLLECTION [NAME] [-l SELECTOR] [-o table|json]
    watchhub apply -f FILE [-c COLLECTION]
    watchhub delete COLLECTION NAME
    watchhub watch COLLECTION [NAME] [--since RV] [-l SELECTOR] [-o table|json]
                   [--no-reconnect]

Every command but ``serve`` talks to the hub at ``--server`` (default
``$WATCHHUB_URL`` or ``http://127.0.0.1:8080``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.core.events import Event, EventType

from .backoff import Backoff
from .client import Client
from .errors import ApiError, ClientError, DecodeError, TransportError

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:8080"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    try:
        return asyncio.run(args.run(args))
    except KeyboardInterrupt:
        return 130
    except ApiError as error:
        print(f"error: {error.message} ({error.code} {error.reason})", file=sys.stderr)
        return 1
    except (ClientError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watchhub",
        description="A hub of JSON resources that streams every change.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the hub",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    serve.add_argument(
        "--store",
        default="sqlite",
        type=_store_spec,
        help="where data lives: sqlite, memory, or nats://HOST:PORT[,nats://...]",
    )
    serve.add_argument("--data", default="watchhub.db", help="the SQLite file")
    serve.add_argument(
        "--nats-bucket", default="watchhub", help="the JetStream key-value bucket"
    )
    serve.add_argument(
        "--nats-replicas", type=int, default=1, help="JetStream replicas of new bucket"
    )
    serve.add_argument(
        "--nats-key-history", type=int, default=64, help="revisions kept per key (1-64)"
    )
    serve.add_argument(
        "--history", type=int, default=10_000, help="changes kept per collection"
    )
    serve.add_argument(
        "--max-object-size", type=int, default=3 * 1024 * 1024, help="bytes"
    )
    serve.add_argument(
        "--bookmark-interval",
        type=float,
        default=60.0,
        help="seconds between bookmarks",
    )
    serve.add_argument(
        "--min-watch-timeout",
        type=float,
        default=1800.0,
        help="seconds; a watch without timeoutSeconds ends between this and twice it",
    )
    serve.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an origin, besides the hub's own, whose pages may call the hub",
    )
    _security_arguments(serve)
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="readable lines (default) or one JSON object per line",
    )

    def client_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument(
            "--server",
            default=os.environ.get("WATCHHUB_URL", DEFAULT_URL),
            help="the hub's URL (default $WATCHHUB_URL or %(default)s)",
        )
        sub.add_argument(
            "--token",
            default=os.environ.get("WATCHHUB_TOKEN"),
            help="a bearer token (default $WATCHHUB_TOKEN)",
        )
        return sub

    get = client_command("get", "list a collection, or get one object")
    get.add_argument("collection")
    get.add_argument("name", nargs="?")
    get.add_argument("-l", "--selector", help="label selector")
    get.add_argument("-o", "--output", choices=["table", "json"], default="table")
    get.set_defaults(run=_get)

    apply = client_command("apply", "create objects, or replace those that exist")
    apply.add_argument(
        "-f", "--filename", required=True, help="a JSON file, - for stdin"
    )
    apply.add_argument(
        "-c", "--collection", help="the collection (default: from each object's kind)"
    )
    apply.set_defaults(run=_apply)

    delete = client_command("delete", "delete one object")
    delete.add_argument("collection")
    delete.add_argument("name")
    delete.set_defaults(run=_delete)

    watch = client_command("watch", "print every change as it happens")
    watch.add_argument("collection")
    watch.add_argument("name", nargs="?")
    watch.add_argument("--since", metavar="RV", help="start after this resourceVersion")
    watch.add_argument("-l", "--selector", help="label selector")
    watch.add_argument("-o", "--output", choices=["table", "json"], default="table")
    watch.add_argument(
        "--transport", choices=["chunked", "websocket", "sse"], default="chunked"
    )
    watch.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="end when the watch ends or breaks, instead of resuming it",
    )
    watch.set_defaults(run=_watch)
    return parser


# serve


def _store_spec(value: str) -> str:
    if value in ("sqlite", "memory") or value.startswith(("nats://", "tls://")):
        return value
    raise argparse.ArgumentTypeError(
        f"unknown store {value!r}: use sqlite, memory or nats://HOST:PORT"
    )


def _serve(args: argparse.Namespace) -> int:
    from hub import HubConfig
    from hub.api import ServerConfig
    from hub.app import ServeOptions, serve
    from hub.logs import configure

    configure(args.log_level, args.log_format)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        store=args.store,
        data=args.data,
        nats_bucket=args.nats_bucket,
        nats_replicas=args.nats_replicas,
        nats_key_history=args.nats_key_history,
        hub=HubConfig(
            history=args.history,
            max_object_size=args.max_object_size,
            bookmark_interval=args.bookmark_interval,
            min_watch_timeout=args.min_watch_timeout,
        ),
        server=ServerConfig(
            max_body_size=args.max_object_size + 1024 * 1024,
            allowed_origins=args.allowed_origin,
            **_security_config(args),
        ),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    refusal = _refuse_open_hub(args)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    from hub.api.security import check_config
    from hub.app import tls_context

    try:
        check_config(options.server)
        tls_context(options.tls_cert, options.tls_key)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    serve(options)
    return 0


def _security_arguments(serve: argparse.ArgumentParser) -> None:
    """Add the flags of authentication, authorization, limits and TLS."""
    group = serve.add_argument_group("security (see docs/security.md)")
    add = group.add_argument
    add("--token-file", help='bearer tokens: token,user,uid,"group1,group2" per line')
    add("--jwt-key", help="a JWT key file: an HS256 secret or an RS256 PEM public key")
    add("--jwt-audience", default="watchhub", help="the audience JWTs must name")
    add("--jwt-issuer", help="the issuer JWTs must name")
    add(
        "--anonymous",
        action="store_true",
        help="serve requests without credentials too (subject to the rules)",
    )
    add("--rules-file", help="authorization rules (JSON); without it, all is allowed")
    add("--max-watchers", type=int, default=10_000, help="open watches, in all")
    add("--max-watchers-per-client", type=int, default=1_000, help="open watches")
    add("--max-objects-per-collection", type=int, default=100_000, help="objects")
    add("--write-rate", type=float, default=1_000.0, help="writes/s per client; 0: any")
    add("--write-burst", type=int, default=2_000, help="writes at once per client")
    add("--header-timeout", type=float, default=15.0, help="seconds for a request head")
    add("--body-timeout", type=float, default=30.0, help="seconds for a request body")
    add("--tls-cert", help="a PEM certificate chain: serve HTTPS")
    add("--tls-key", help="the PEM private key of --tls-cert")


def _security_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "token_file": args.token_file,
        "jwt_key_file": args.jwt_key,
        "jwt_audience": args.jwt_audience,
        "jwt_issuer": args.jwt_issuer,
        "anonymous": args.anonymous,
        "rules_file": args.rules_file,
        "max_watchers": args.max_watchers,
        "max_watchers_per_client": args.max_watchers_per_client,
        "max_objects_per_collection": args.max_objects_per_collection,
        "write_rate": args.write_rate,
        "write_burst": args.write_burst,
        "header_timeout": args.header_timeout,
        "body_timeout": args.body_timeout,
    }


def _refuse_open_hub(args: argparse.Namespace) -> str | None:
    # A hub without authentication is open to whoever reaches it: that is
    # fine on the loopback, and needs saying so with --anonymous elsewhere.
    import ipaddress

    if args.token_file or args.jwt_key or args.anonymous:
        return None
    host = args.host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"refusing to serve on {args.host} without authentication: give "
        "--token-file or --jwt-key, or --anonymous to serve everyone"
    )


# get, apply, delete


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _age(timestamp: str) -> str:
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return "?"
    seconds = int((datetime.now(UTC) - created.replace(tzinfo=UTC)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _table(items: list[dict[str, Any]]) -> str:
    rows = [("NAME", "RESOURCEVERSION", "AGE", "LABELS")]
    for item in items:
        meta = item.get("metadata", {})
        labels = ",".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items())
        rows.append(
            (
                meta.get("name", ""),
                meta.get("resourceVersion", ""),
                _age(meta.get("creationTimestamp", "")),
                labels or "<none>",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "   "
        + row[3]
        for row in rows
    )


async def _get(args: argparse.Namespace) -> int:
    async with Client(args.server, token=args.token) as client:
        if args.name:
            obj = await client.get(args.collection, args.name)
            if args.output == "json":
                _print_json(obj)
            else:
                print(_table([obj]))
            return 0
        listed = await client.list(args.collection, label_selector=args.selector)
        if args.output == "json":
            _print_json(listed)
        elif listed["items"]:
            print(_table(listed["items"]))
        else:
            print(f"no objects in {args.collection}", file=sys.stderr)
        return 0


def _read_objects(path: str) -> list[dict[str, Any]]:
    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if isinstance(value, dict) and isinstance(value.get("items"), list):
        value = value["items"]
    objects = value if isinstance(value, list) else [value]
    if not all(isinstance(obj, dict) for obj in objects):
        raise ValueError(f"{path} must hold a JSON object, an array of them, or a List")
    return objects


def _collection_of(obj: dict[str, Any], default: str | None) -> str:
    if default:
        return default
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError("object has no kind: name its collection with -c")
    kind = kind.lower()
    return kind if kind.endswith("s") else kind + "s"


async def _apply(args: argparse.Namespace) -> int:
    objects = _read_objects(args.filename)
    async with Client(args.server, token=args.token) as client:
        for obj in objects:
            collection = _collection_of(obj, args.collection)
            name = obj.get("metadata", {}).get("name", "?")
            try:
                stored = await client.create(collection, obj)
                verb = "created"
            except ApiError as error:
                if error.reason != "AlreadyExists":
                    raise
                stored = await client.replace(collection, obj)
                verb = "replaced"
            rv = stored["metadata"]["resourceVersion"]
            print(f"{collection}/{name} {verb} (resourceVersion {rv})")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with Client(args.server, token=args.token) as client:
        await client.delete(args.collection, args.name)
    print(f"{args.collection}/{args.name} deleted")
    return 0


# watch


# The annotation of the bookmark that ends a watch's initial events, as in
# Kubernetes (PROTOCOL.md, sendInitialEvents).
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


async def _watch(args: argparse.Namespace) -> int:
    # Without --no-reconnect, a watch that ends or breaks is resumed after the
    # last resourceVersion seen (bookmarks included, which are asked for and
    # not printed), so no change is missed or printed twice. A watch of the
    # current state asks for the bookmark that ends its initial events, whose
    # version is where that state stands: a break before it starts over. A 410
    # starts over too. A hub unreachable at the start is an error.
    since: str | None = args.since or None
    backoff = Backoff()
    opened = False
    async with Client(args.server, token=args.token) as client:
        while True:
            fresh = since in (None, "0")
            try:
                watcher = await client.watch(
                    args.collection,
                    args.name,
                    resource_version=since,
                    label_selector=args.selector,
                    allow_bookmarks=args.reconnect,
                    send_initial_events=True if fresh and args.reconnect else None,
                    transport=args.transport,
                )
            except (ApiError, TransportError) as error:
                if not (args.reconnect and opened):
                    raise
                since = await _before_retry(error, since, backoff)
                continue
            if opened:
                where = "the current state" if fresh else f"resourceVersion {since}"
                _say(f"reconnected, watching from {where}")
            opened = True
            since, received, why = await _follow(args, watcher, since, backoff)
            if not args.reconnect:
                return 0
            if received:
                _say(f"{why}; reconnecting")
            else:
                delay = backoff.next_delay()
                _say(f"{why}; reconnecting in {delay:.1f} s")
                await asyncio.sleep(delay)


async def _before_retry(
    error: ApiError | TransportError, since: str | None, backoff: Backoff
) -> str | None:
    """Say why a watch could not open again; return where to watch from next."""
    if isinstance(error, ApiError) and error.code in (410, 504):
        # 504: a hub that lost its history has not reached that version.
        _say(f"cannot resume after resourceVersion {since}: {error.message}")
        _say("watching again from the current state")
        return "0"
    if isinstance(error, ApiError) and error.code < 500 and error.code != 429:
        raise error
    delay = backoff.next_delay()
    _say(f"cannot reach the hub ({error}); retrying in {delay:.1f} s")
    await asyncio.sleep(delay)
    return since


async def _follow(
    args: argparse.Namespace, watcher: Any, since: str | None, backoff: Backoff
) -> tuple[str | None, bool, str]:
    """Print a watch's events; return where it got to, if any came, and why it ended."""
    fresh = since in (None, "0") and args.reconnect
    received = False
    try:
        async with watcher:
            async for event in watcher:
                received = True
                backoff.reset()
                if _print_event(args, event):
                    return "0", received, "the hub no longer holds that history"
                if fresh:
                    annotations = event.object.get("metadata", {}).get("annotations")
                    if event.type is EventType.BOOKMARK and isinstance(
                        annotations, dict
                    ):
                        if annotations.get(INITIAL_EVENTS_END) == "true":
                            since, fresh = event.resource_version, False
                elif event.resource_version:
                    since = event.resource_version
    except DecodeError as error:
        if not args.reconnect:
            raise
        return since, received, f"the watch broke: {error}"
    return since, received, "the hub ended the watch"


def _print_event(args: argparse.Namespace, event: Event) -> bool:
    """Print one event; return True where the watch must start again (410)."""
    if event.type is EventType.BOOKMARK and args.reconnect:
        return False
    if event.type is EventType.ERROR and args.reconnect:
        if event.object.get("code") == 410:
            message = event.object.get("message", "")
            _say(f"410 Expired: {message}; watching again from the current state")
            return True
    if args.output == "json":
        line = orjson.dumps(event.to_dict()).decode()
    elif event.type is EventType.ERROR:
        line = f"ERROR     {event.object.get('message', '')}"
    else:
        rv = event.resource_version
        line = f"{event.type.value:<9} {event.name or '-':<30} {rv}"
    print(line, flush=True)
    return False


def _say(message: str) -> None:
    """Tell the person watching what the watch itself is doing, on stderr."""
    print(f"watchhub watch: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
