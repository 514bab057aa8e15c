"""The socket.io book stream for N seconds, as recording would run it, and what it showed.

`listen` runs the recorder's own `BookStream` on every followed pair and, once connected,
takes an ungrouped snapshot of each pair (as recording does after every connect), so that
`cancels.cancel_reading` can check each cancel against a book. The findings below are pure
functions of what was heard.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from recorder.config import ExchangeConfig
from recorder.exchange.classify import BookUpdate
from recorder.exchange.rest import ExchangeClient, ExchangeError
from recorder.exchange.stream import BookStream, Connected, Disconnected, StreamItem
from recorder.probe.cancels import Seed
from recorder.probe.endpoints import reason_of
from recorder.probe.report import Finding
from recorder.records import RawMessage

SUMMARY_PAIRS = 5
"""Pairs named in a one-line summary; the JSON has them all."""
UNDECODABLE = "(undecodable)"


@dataclass
class Heard:
    """Everything the stream delivered within the window."""

    pairs: tuple[str, ...]
    listened_s: float
    connects: int = 0
    disconnects: list[str] = field(default_factory=list)
    updates: list[BookUpdate] = field(default_factory=list)
    raws: list[RawMessage] = field(default_factory=list)
    seeds: dict[str, Seed] = field(default_factory=dict)
    snapshot_errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    """Why listening itself broke off, if it did."""
    protocol: str | None = None
    """The socket.io generation the stream connected with, when the stream tells."""

    def add(self, item: StreamItem) -> None:
        if isinstance(item, BookUpdate):
            self.updates.append(item)
        elif isinstance(item, RawMessage):
            self.raws.append(item)
        elif isinstance(item, Connected):
            self.connects += 1
            self.protocol = self.protocol or item.protocol
        elif isinstance(item, Disconnected):
            self.disconnects.append(item.session.reason or "disconnected")


async def listen(
    config: ExchangeConfig, client: ExchangeClient, pairs: Sequence[str], seconds: float
) -> Heard:
    heard = Heard(tuple(pairs), seconds)
    stream = BookStream.from_config(config, pairs, connections=1)  # a look, not a record
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    tasks = [asyncio.create_task(stream.run(), name="probe-stream")]
    try:
        while (left_s := deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(stream.items.get(), left_s)
            except TimeoutError:
                break
            heard.add(item)
            if isinstance(item, Connected) and heard.connects == 1:
                session_id = item.session.session_id
                tasks += [
                    asyncio.create_task(_seed(client, pair, session_id, heard), name="probe-seed")
                    for pair in pairs
                ]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
    return heard


async def _seed(client: ExchangeClient, pair: str, session_id: uuid.UUID, heard: Heard) -> None:
    try:
        book = await client.orderbook(pair, grouped=False, reason="probe")
    except ExchangeError as exc:
        heard.snapshot_errors[pair] = reason_of(exc)
        return
    except ValueError as exc:  # a listed pair name the client will not put in a URL
        heard.snapshot_errors[pair] = str(exc)
        return
    heard.seeds[pair] = Seed(book, session_id)


# --- findings -------------------------------------------------------------------------------


def event_name_of(update: BookUpdate) -> str:
    """The socket.io event name a book update arrived under."""
    return update.event_name


def events_per_pair(heard: Heard) -> dict[str, dict[str, int]]:
    """Book events by pair and kind (`new`, `cancel`); a followed pair with none shows zeros."""
    counts: dict[str, dict[str, int]] = {pair: {"new": 0, "cancel": 0} for pair in heard.pairs}
    for update in heard.updates:
        kinds = counts.setdefault(update.event.pair, {"new": 0, "cancel": 0})
        kinds[update.event.kind] += 1
    return counts


def event_names(heard: Heard) -> dict[str, dict[str, int]]:
    """Event names seen: per pair for book updates, and under `raw` for what was kept raw."""
    names: dict[str, Counter[str]] = {}
    for update in heard.updates:
        names.setdefault(update.event.pair, Counter())[event_name_of(update)] += 1
    raw: Counter[str] = Counter(m.event or UNDECODABLE for m in heard.raws)
    found = {pair: dict(counter) for pair, counter in sorted(names.items())}
    if raw:
        found["raw"] = dict(raw)
    return found


def socket_events_finding(heard: Heard) -> Finding:
    key = "socket.events"
    per_pair = events_per_pair(heard)
    details: dict[str, Any] = {
        "pairs": per_pair,
        "book_events": len(heard.updates),
        "raw_messages": len(heard.raws),
        "connects": heard.connects,
        "disconnects": heard.disconnects,
        "listened_s": heard.listened_s,
        "snapshot_errors": heard.snapshot_errors,
    }
    if heard.error is not None:
        return Finding(key, "fail", f"listening broke off: {heard.error}", details)
    if not heard.pairs:
        return Finding(key, "fail", "no pair to subscribe to (rest.pairs failed)", details)
    if heard.connects == 0:
        text = f"no socket.io connection in {heard.listened_s:g} s (the log says why)"
        return Finding(key, "fail", text, details)
    if not heard.updates and heard.raws:
        text = (
            f"none of the {len(heard.raws)} events could be read as a book event; "
            f"kept raw: {_first_raw(heard)}"
        )
        return Finding(key, "fail", text, details)
    busiest = sorted(per_pair.items(), key=lambda kv: -sum(kv[1].values()))
    shown = ", ".join(
        f"{pair} {kinds['new'] + kinds['cancel']} ({kinds['new']} new, {kinds['cancel']} cancel)"
        for pair, kinds in busiest[:SUMMARY_PAIRS]
    )
    if len(busiest) > SUMMARY_PAIRS:
        shown += f", {len(busiest) - SUMMARY_PAIRS} more pairs"
    text = f"{len(heard.updates)} book events in {heard.listened_s:g} s: {shown}"
    if heard.disconnects:
        text += f"; {len(heard.disconnects)} disconnects"
    if not heard.updates:
        return Finding(key, "warn", f"connected, but {text}; listen longer", details)
    return Finding(key, "warn" if heard.disconnects else "ok", text, details)


def event_names_finding(heard: Heard) -> Finding:
    key = "socket.event_names"
    names = event_names(heard)
    details: dict[str, Any] = {"names": names}
    book_names = sorted({n for pair, counts in names.items() if pair != "raw" for n in counts})
    text = ", ".join(book_names[:SUMMARY_PAIRS]) or "no book event"
    if len(book_names) > SUMMARY_PAIRS:
        text += f" and {len(book_names) - SUMMARY_PAIRS} more"
    if not heard.raws:
        return Finding(key, "ok" if book_names else "skip", text, details)
    details["raw_errors"] = sorted({m.error for m in heard.raws})[:SUMMARY_PAIRS]
    return Finding(key, "warn", f"{text}; kept raw: {_first_raw(heard)}", details)


def _first_raw(heard: Heard) -> str:
    counts = Counter(m.event or UNDECODABLE for m in heard.raws)
    shown = ", ".join(f"{name} x{n}" for name, n in counts.most_common(SUMMARY_PAIRS))
    return f"{shown} (first: {heard.raws[0].error})"
