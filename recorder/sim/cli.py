"""`recorder sim`: the simulated exchange as a process, until SIGINT or SIGTERM; `recorder
replay`: the same exchange serving a recorded period (`recorder.sim.replay`).

Kept apart from `server.py` so that the `recorder` command starts without importing aiohttp
and socket.io for the commands that do not need them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime

from recorder import exitcodes
from recorder.book import READINGS
from recorder.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the order flow")
    parser.add_argument(
        "--pairs",
        default="BTC_USD,ETH_USD",
        help="comma-separated pairs (BTC_USD, ETH_USD, ETH_BTC, LTC_USD, XRP_USD, BTC_EUR, "
        "or any AAA_BBB)",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, metavar="EVENTS_PER_S", help="book events per second"
    )
    parser.add_argument(
        "--history-hours", type=float, default=6.0, help="hours of generated past trades"
    )
    parser.add_argument(
        "--history-events-per-hour",
        type=float,
        default=1800.0,
        help="book events per hour in the generated past",
    )
    parser.add_argument(
        "--book-orders",
        type=int,
        default=0,
        metavar="N",
        help="fill each pair's book up to N resting orders at start (a deep book; 0: as the "
        "history left it)",
    )
    parser.add_argument(
        "--sign-encoding",
        choices=("python", "js"),
        help="accept only signatures url-encoded as this sample of the docs does (default: either)",
    )
    parser.add_argument(
        "--cancel-id",
        choices=READINGS,
        default="oid",
        help="the field of a cancel event that names the cancelled order (the other carries "
        "the cancel's own id)",
    )
    parser.add_argument(
        "--event-name",
        type=_event_name,
        default="channel",
        metavar="channel|pair|NAME",
        help="socket.io event of book payloads: channel (book_BTC_USD, [payload]), pair "
        "(BTC_USD, [payload]) or NAME (NAME, [book_BTC_USD, payload])",
    )
    parser.add_argument(
        "--max-page", type=_page_size, default=1000, metavar="N", help="most trades per "
        "/exchanges/ page (a larger limit is served as N)",
    )  # fmt: skip
    faults = parser.add_argument_group("faults (also switchable at run time under /admin/)")
    faults.add_argument("--rate-429", type=float, default=0.0, help="share of REST calls -> 429")
    faults.add_argument("--rate-5xx", type=float, default=0.0, help="share of REST calls -> 5xx")
    faults.add_argument(
        "--rate-truncated", type=float, default=0.0, help="share of REST bodies cut in half"
    )
    faults.add_argument("--latency-s", type=float, default=0.0, help="delay of every REST call")
    faults.add_argument(
        "--outage-s", type=float, default=0.0, help="start with an outage of this many seconds"
    )
    faults.add_argument(
        "--drop-every-s", type=float, default=0.0, help="drop all sockets this often (0: never)"
    )
    faults.add_argument(
        "--burst-every-s",
        type=float,
        default=0.0,
        help="send malformed and unknown socket events this often (0: never)",
    )
    faults.add_argument("--paused", action="store_true", help="start with the order flow paused")


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pairs", required=True, type=_pairs, help="comma-separated recorded pairs, e.g. BTC_USD"
    )
    parser.add_argument(
        "--since", required=True, type=_instant, help="start: the book as it was then "
        "(ISO 8601; UTC without a zone)",
    )  # fmt: skip
    parser.add_argument(
        "--until", required=True, type=_instant, help="end (ISO 8601; UTC without a zone)"
    )
    parser.add_argument(
        "--speed", type=_speed, default=1.0, metavar="X",
        help="X times real time (default 1); 0 or max: as fast as the clients take the events",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    parser.add_argument(
        "--start", choices=("subscribed", "now"), default="subscribed",
        help="when the clock starts: once every pair's channel has a subscriber (default; "
        "POST /admin/resume starts it sooner), or now",
    )  # fmt: skip


def _pairs(text: str) -> tuple[str, ...]:
    pairs = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not pairs:
        raise argparse.ArgumentTypeError("name at least one pair")
    return pairs


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _speed(text: str) -> float | None:
    from recorder.sim.replay import parse_speed

    try:
        return parse_speed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_replay(args: argparse.Namespace, dsn: str) -> int:
    """Serve the recorded period of database `dsn` until SIGINT or SIGTERM; a period that
    cannot be replayed raises `replay.ReplayError` (a ValueError)."""
    from recorder.sim.replay import ReplaySettings

    settings = ReplaySettings(
        dsn=dsn, pairs=args.pairs, since=args.since, until=args.until, speed=args.speed,
        host=args.host, port=args.port, start=args.start,
    )  # fmt: skip
    try:
        return asyncio.run(_serve_replay(settings))
    except OSError as exc:
        print(f"recorder replay: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return exitcodes.STARTUP_FAILURE


async def _serve_replay(settings: object) -> int:
    from recorder.sim.replay import ReplaySettings, run_replay

    assert isinstance(settings, ReplaySettings)
    stop = _stop_on_signals()
    async with run_replay(settings) as sim:
        speed = "max" if settings.speed is None else f"{settings.speed:g}x"
        print(
            f"recorder replay: serving {sim.base_url} (REST and socket.io): "
            f"{','.join(settings.pairs)} from {settings.since.isoformat()} to "
            f"{settings.until.isoformat()} at {speed}",
            flush=True,
        )
        if settings.start == "subscribed":
            print(
                "recorder replay: the clock starts once every pair's channel has a subscriber "
                "(or on POST /admin/resume)",
                flush=True,
            )
        await stop.wait()
    return exitcodes.OK


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _event_name(text: str) -> str:
    from recorder.sim.server import RESERVED_EVENTS

    if not text or text in RESERVED_EVENTS:
        raise argparse.ArgumentTypeError(f"not a usable socket.io event name: {text!r}")
    return text


def _page_size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a page size of at least 1: {text!r}")
    return int(text)


def cmd_sim(args: argparse.Namespace, config: Config) -> int:
    from recorder.sim.server import SimSettings

    pairs = tuple(p.strip() for p in args.pairs.split(",") if p.strip())
    settings = SimSettings(
        host=args.host,
        port=args.port,
        seed=args.seed,
        pairs=pairs,
        rate_per_s=args.rate,
        history_hours=args.history_hours,
        history_events_per_hour=args.history_events_per_hour,
        book_orders=args.book_orders,
        event_name=args.event_name,
        max_page=args.max_page,
        faults={
            "rate_429": args.rate_429,
            "rate_5xx": args.rate_5xx,
            "rate_truncated": args.rate_truncated,
            "latency_s": args.latency_s,
            "paused": args.paused,
        },
        outage_s=args.outage_s,
        drop_every_s=args.drop_every_s,
        burst_every_s=args.burst_every_s,
        sign_encoding=args.sign_encoding,
        cancel_id=args.cancel_id,
    )
    try:
        return asyncio.run(_serve(settings))
    except ValueError as exc:
        print(f"recorder sim: {exc}", file=sys.stderr)
        return exitcodes.BAD_CONFIG
    except OSError as exc:
        print(f"recorder sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return exitcodes.STARTUP_FAILURE


async def _serve(settings: object) -> int:
    from recorder.sim.server import SimSettings, run_sim

    assert isinstance(settings, SimSettings)
    stop = _stop_on_signals()
    async with run_sim(settings) as sim:
        print(f"recorder sim: serving {sim.base_url} (REST and socket.io)", flush=True)
        for account in sim.accounts.by_name.values():
            # Fake keys of a fake exchange: printing them is the point.
            print(
                f"recorder sim: account {account.name}: key {account.credentials.key} "
                f"secret {account.credentials.secret}",
                flush=True,
            )
        await stop.wait()
    return exitcodes.OK
