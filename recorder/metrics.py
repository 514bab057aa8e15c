"""The recorder's Prometheus metrics, defined once, used by every part.

Label values stay bounded: pairs, tables, endpoints, status codes, never ids. The names are
promises to the dashboard and the alert rules; keep them.
"""

from __future__ import annotations

import platform
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """A labelled metric's children, each looked up once.

    `metric.labels(...)` validates its values and takes a lock on every call, some
    microseconds; the stream asks for the same few children for every event
    (docs/benchmarks.md, "The event path, lean"). `forget_pair` drops a pair's children
    here as it removes them from the metric, so that a later event of the pair makes its
    series anew.
    """

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}
        _CHILDREN.append(self)

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child

    def forget(self, value: str) -> None:
        """Drop the children labelled `value` (in any label)."""
        for values in [v for v in self._children if value in v]:
            del self._children[values]


_CHILDREN: list[Children[Counter] | Children[Gauge] | Children[Histogram]] = []

socket_connected = Gauge(
    "recorder_socket_connected", "1 while at least one socket.io stream connection is up, else 0"
)
socket_reconnects = Counter(
    "recorder_socket_reconnects_total", "socket.io reconnects since start, all connections"
)
# Per connection of the stream (`exchange.stream_connections`, labelled 0, 1, ...).
stream_connected = Gauge(
    "recorder_stream_connected", "1 while this stream connection is up, else 0", ["connection"]
)
stream_connections_up = Gauge(
    "recorder_stream_connections_up", "Stream connections up now (0: book events are missed)"
)
stream_reconnects = Counter(
    "recorder_stream_reconnects_total", "Reconnects of this stream connection", ["connection"]
)
stream_connect_failures = Counter(
    "recorder_stream_connect_failures_total",
    "Connection attempts of this stream connection that failed (refused, timed out)",
    ["connection"],
)
stream_events = Counter(
    "recorder_stream_events_total",
    "Book events this connection received, copies of events another brought first included",
    ["connection"],
)
stream_first_events = Counter(
    "recorder_stream_first_events_total",
    "Book events this connection delivered first (the copy recorded)",
    ["connection"],
)
stream_silences = Counter(
    "recorder_stream_silences_total",
    "A connection silent on a pair whose trade tape advanced: resubscribed, then reconnected",
    ["connection", "pair", "action"],
)
stream_info = Gauge(
    "recorder_stream_info",
    "1 for the socket.io generation of the last stream connection: protocol 2 for socket.io"
    " 1.x/2.x (Engine.IO v3), 4 for socket.io 3.x/4.x (Engine.IO v4)",
    ["protocol"],
)
socket_events = Counter(
    "recorder_socket_events_total", "Book events received from the socket", ["pair", "kind"]
)
last_event_timestamp = Gauge(
    "recorder_last_event_timestamp_seconds",
    "Unix time at which the last book event of the pair was received",
    ["pair"],
)
malformed_messages = Counter(
    "recorder_malformed_messages_total",
    "Payloads that could not be parsed and were kept verbatim in raw_messages",
    ["source"],
)
http_requests = Counter(
    "recorder_http_requests_total",
    "REST calls by endpoint and outcome (HTTP status, or 'error' when no response came)",
    ["endpoint", "status"],
)
http_request_duration = Histogram(
    "recorder_http_request_duration_seconds", "REST call latency", ["endpoint"]
)
rows_written = Counter(
    "recorder_rows_written_total",
    "Rows committed to the database (rows stored or updated; replayed duplicates do not count)",
    ["table"],
)
write_buffer_rows = Gauge(
    "recorder_write_buffer_rows",
    "Rows received but not yet committed (in memory and in the spool)",
)
spool_rows = Gauge("recorder_spool_rows", "Rows waiting in the on-disk spool")
spool_bytes = Gauge("recorder_spool_bytes", "Size of the on-disk spool")
db_write_duration = Histogram(
    "recorder_db_write_duration_seconds", "Duration of one flush of the writer"
)
db_up = Gauge("recorder_db_up", "1 while the database accepts writes, else 0")
book_resyncs = Counter(
    "recorder_book_resyncs_total",
    "Order-book snapshots taken to resync the book, by reason",
    ["pair", "reason"],
)
book_drift = Counter(
    "recorder_book_drift_total",
    "Snapshots that disagreed with the book rebuilt from events",
    ["pair"],
)
trades_backfilled = Counter(
    "recorder_trades_backfilled_total", "Trades recovered through REST catch-up", ["pair"]
)
cancel_reading = Counter(
    "recorder_cancel_reading_total",
    "Cancel events applied to the rebuilt book, by which of their ids named a resting order: "
    "oid, cancel_order_id, ambiguous (both; the reading established so far decided) or "
    "unknown (none removed)",
    ["pair", "reading"],
)

# --- what else an operator needs; documented in docs/operations.md --------------------------

event_lag = Histogram(
    "recorder_event_lag_seconds",
    "Receipt time minus the exchange's own event time, per book event and polled trade",
    ["pair"],
    # Clock skew and the exchange's own delays sit in the sub-second range; minutes mean trouble.
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
snapshot_duration = Histogram(
    "recorder_snapshot_duration_seconds",
    "Time from sending an order-book snapshot request to having its rows ready for the writer",
    ["pair"],
)
snapshot_orders = Gauge(
    "recorder_snapshot_orders",
    "Orders (levels when grouped) in the latest order-book snapshot, by side",
    ["pair", "side"],
)
last_snapshot_timestamp = Gauge(
    "recorder_last_snapshot_timestamp_seconds",
    "Unix time at which the latest order-book snapshot of the pair was received",
    ["pair"],
)
last_trade_timestamp = Gauge(
    "recorder_last_trade_timestamp_seconds",
    "Exchange time of the newest trade recorded for the pair (tape or backfill)",
    ["pair"],
)
backfill_in_progress = Gauge(
    "recorder_backfill_in_progress",
    "1 while the REST catch-up of the pair's trade tape is running, else 0",
    ["pair"],
)
backfill_cursor_timestamp = Gauge(
    "recorder_backfill_cursor_timestamp_seconds",
    "Exchange time of the trade at which the running backfill's paging stands (moves as it goes)",
    ["pair"],
)
last_flush_timestamp = Gauge(
    "recorder_last_flush_timestamp_seconds",
    "Unix time of the writer's latest committed flush",
)
build_info = Gauge(
    "recorder_build_info",
    "Always 1; the labels carry the recorder's version and the Python it runs on",
    ["version", "python"],
)

try:
    _version = version("bitexbit-recorder")
except PackageNotFoundError:  # running from a source tree that was never installed
    _version = "unknown"
# A constant: set once here, so every process that imports the metrics reports it.
build_info.labels(_version, platform.python_version()).set(1)

task_failures = Counter(
    "recorder_task_failures_total",
    "Supervised tasks and periodic steps that failed and were tried again, by task name",
    ["task"],
)

pairs_followed = Gauge(
    "recorder_pairs_followed",
    "Pairs being recorded now: listed by the exchange and wanted by the configuration",
)
pairs_delisted = Counter(
    "recorder_pairs_delisted_total",
    "Times a recorded pair left the exchange's pair list and its recording was stopped",
    ["pair"],
)


def forget_pair(pair: str) -> None:
    """Drop a delisted pair's gauges: left frozen, they would read as a stalled recording
    (and fire the alerts on stale events or a stuck backfill) for ever."""
    series: list[tuple[Gauge, tuple[str, ...]]] = [
        (gauge, (pair,))
        for gauge in (
            last_event_timestamp,
            last_snapshot_timestamp,
            last_trade_timestamp,
            backfill_in_progress,
            backfill_cursor_timestamp,
        )
    ]
    series += [(snapshot_orders, (pair, side)) for side in ("buy", "sell")]
    for gauge, labels in series:
        with suppress(KeyError):  # never set for this pair
            gauge.remove(*labels)
    for children in _CHILDREN:
        children.forget(pair)


# --- the writer's spool and its own errors; documented in docs/operations.md -----------------

spool_writable = Gauge(
    "recorder_spool_writable",
    "1 while the spool under data_dir can be written, else 0 (rows then wait in memory)",
)
spool_failures = Counter(
    "recorder_spool_failures_total",
    "Spool operations that failed with an OS error (full disk, I/O error), by operation: "
    "open, write, read or delete",
    ["operation"],
)
spool_held_rows = Gauge(
    "recorder_spool_held_rows",
    "Rows set aside under data_dir/spool/held because writing them failed with an error that "
    "is neither an outage nor a refusal; tried again at each start and every few minutes",
)


# --- several recorders on one database (recorder/leases.py); docs/operations.md -------------

leases_owned = Gauge(
    "recorder_leases_owned",
    "Leases this recorder holds, so what it records: pairs, and the account if it has it",
)
recorders_live = Gauge(
    "recorder_recorders_live",
    "Recorders sharing this database's pairs now (unexpired members, this one included)",
)
leases_unowned = Gauge(
    "recorder_leases_unowned",
    "Wanted lease slots (each pair recorder.redundancy times, and the account) that no live "
    "recorder held at this recorder's last lease round, its own claims included",
)
lease_takeovers = Counter(
    "recorder_lease_takeovers_total",
    "Leases this recorder took over from another whose lease had expired (died, hung or "
    "lost the database)",
)
lease_losses = Counter(
    "recorder_leases_lost_total",
    "Leases this recorder lost without giving them up: taken over by another, or dropped "
    "because they could not be renewed in time",
)
lease_renew_failures = Counter(
    "recorder_lease_renew_failures_total",
    "Lease rounds (renew, claim) that failed, mostly because the database was unreachable",
)
