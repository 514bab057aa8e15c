"""`recorder sim`: the simulated exchange as a process, until SIGINT or SIGTERM.

Kept apart from `server.py` so that the `recorder` command starts without importing aiohttp
and socket.io for the commands that do not need them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
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
