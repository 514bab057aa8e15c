"""Several recorders on one database: who records which pair, decided through leases.

Every `recorder run` on a database is a member: it keeps a row in `recorder_members` and
leases on what it records (a pair, or "account" for the private endpoints) in `leases`,
both with an expiry set by the database's clock (migrations/0015_leases.sql says why a
table and not advisory locks). Once every `lease_ttl_s / 3` a round, one transaction:

    1. renew this run's member row and its leases (`UPDATE ... WHERE owner = me`); a lease
       it believed it held and could not renew was taken over: lost;
    2. read every lease and the number of live members; `plan()` says what to claim (free
       or expired slots, up to the fair share) and what to give up (the surplus above it,
       and what is no longer wanted, such as a delisted pair);
    3. claim, one slot at a time (another member may claim the same slot at once: one wins).

then `on_lost` stops recording what was lost, `on_gained` starts recording what was won,
and the surplus is given up: recording stops first, then the lease is deleted, so that the
other member takes it at its next round instead of after an expiry.

The fair share is ceil(slots / live members), slots being `redundancy` per pair and one for
the account (never fetched twice: the exchange allows two signed calls a second per account).
Shares round up, so together they always cover every slot.

A member that cannot renew (the database is gone, or the process was frozen) must not go on
recording past the moment another could take its leases over: a fence, apart from the
rounds so that a round stuck on a dead connection cannot hold it up, drops every lease (and
stops recording) once `lease_ttl_s` minus a margin has passed, by this process's monotonic
clock, since the start of the last round that renewed. The database set the expiry from its
own now() in that round's transaction, which began after that start, so the fence always
falls before the expiry others see. A member that was alone at its last round keeps
recording instead (into the writer's spool): nobody can take its leases over while the
database is down, and a recorder alone must lose nothing to an outage of the database; once
the database is back, it renews what nobody has taken, and stops recording what another
member took first.

The pure part (`plan`, `fair_share`) is apart from the SQL (`_Round`), and unit-tested
without a database (tests/test_leases_plan.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from recorder import metrics
from recorder.clock import REAL_CLOCK, Clock
from recorder.logs import get_logger
from recorder.retry import Backoff
from recorder.ticker import Ticker

log = get_logger(__name__)

ACCOUNT = "account"
"""The resource of the private endpoints (balances, orders, fills of the account)."""

FENCE_MARGIN = 0.1
"""The fence drops the leases this share of `lease_ttl_s` before they expire: stopping the
recording of a pair (cancelling its tasks, unsubscribing) takes a moment too."""

Change = Callable[[list[str]], Awaitable[None]]


# --- what to claim and what to give up (pure) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holding:
    """One row of `leases` as a round reads it."""

    resource: str
    slot: int
    owner: uuid.UUID
    live: bool
    """Not expired, by the database's clock."""


@dataclass(frozen=True, slots=True)
class Plan:
    release: list[str] = field(default_factory=list)
    """This member's resources to give up: no longer wanted, then the surplus."""
    claim: list[tuple[str, int]] = field(default_factory=list)
    """Free or expired slots to try, best first (one per resource)."""
    claim_count: int = 0
    """How many of `claim` to win at most (some may be won by another member first)."""


def fair_share(slots: int, live_members: int) -> int:
    """The most slots one member should hold: ceil(slots / members), so shares cover all."""
    return math.ceil(slots / max(1, live_members))


def plan(
    me: uuid.UUID,
    wanted: Mapping[str, int],
    holdings: Iterable[Holding],
    live_members: int,
) -> Plan:
    """What member `me` should do, given the slots per resource it wants recorded (`wanted`),
    every lease row, and the number of live members (`me` included)."""
    holdings = list(holdings)
    mine = {h.resource for h in holdings if h.owner == me and h.live}
    slots = sum(wanted.values())
    share = fair_share(slots, live_members)
    floor = slots // max(1, live_members)
    unwanted = sorted(mine - wanted.keys())
    kept = sorted(mine & wanted.keys(), key=lambda r: _spread(me, r))
    counts: dict[uuid.UUID, int] = {me: len(kept)}
    held_by: dict[uuid.UUID, set[str]] = {}
    for h in holdings:
        if h.live and h.owner != me and h.resource in wanted:
            counts[h.owner] = counts.get(h.owner, 0) + 1
            held_by.setdefault(h.owner, set()).add(h.resource)
    # Members holding nothing have no rows: they are the live ones not seen.
    lowest = 0 if live_members > len(counts) else min(counts.values())
    # Shares round up, so 4 pairs on 3 members may settle as 2, 2 and 0: whoever holds
    # the most (ties: the highest id) gives one up while a member is below the floor, and
    # only members below the floor claim meanwhile, so that the one given up goes to them.
    starving = lowest < floor
    top = max(counts.items(), key=lambda item: (item[1], item[0].bytes))[0] == me
    if len(kept) > share:
        surplus = kept[share:]
    elif starving and top and len(kept) > lowest + 1:
        # Only a pair a member below the floor can take (with redundancy, one it does not
        # hold a copy of already): another would come back to this member at its next round.
        if live_members > len(counts):  # a member holding nothing can take any
            takers: list[set[str]] = [set()]
        else:
            takers = [held_by.get(m, set()) for m, n in counts.items() if n < floor]
        surplus = [r for r in reversed(kept) if any(r not in held for held in takers)][:1]
    else:
        surplus = []
    # The surplus goes from the end of this member's own order, the part it would claim last.
    if surplus or len(kept) >= share or (starving and len(kept) >= floor):
        return Plan(release=unwanted + sorted(surplus))
    held_live: dict[tuple[str, int], bool] = {(h.resource, h.slot): h.live for h in holdings}
    owners: dict[str, int] = {}
    for h in holdings:
        if h.live:
            owners[h.resource] = owners.get(h.resource, 0) + 1
    candidates = []
    for resource, count in wanted.items():
        if resource in mine:
            continue
        free = [s for s in range(count) if not held_live.get((resource, s), False)]
        if free:
            candidates.append((owners.get(resource, 0), _spread(me, resource), resource, free[0]))
    # Resources nobody records first (with redundancy, each gets one owner before a second);
    # among equals, an order of this member's own, so members starting together do not all
    # race for the same slots.
    candidates.sort()
    return Plan(
        release=unwanted,
        claim=[(resource, slot) for _, _, resource, slot in candidates],
        claim_count=share - len(kept),
    )


def unowned(wanted: Mapping[str, int], holdings: Iterable[Holding], gained: Iterable[str]) -> int:
    """How many slots no live member holds once a round has claimed `gained`: those this
    member wants (each pair `redundancy` times) that are not held, and the resources it does
    not want whose lease expired with nobody holding them now (a member configured with a
    pair the others do not follow died). Every member reads the same rows, so any one of
    them can say that a pair goes unrecorded."""
    held: dict[str, int] = {}
    for h in holdings:
        if h.live:
            held[h.resource] = held.get(h.resource, 0) + 1
    for resource in gained:
        held[resource] = held.get(resource, 0) + 1
    missing = sum(max(0, slots - held.get(resource, 0)) for resource, slots in wanted.items())
    abandoned = {
        h.resource for h in holdings if h.resource not in wanted and h.resource not in held
    }
    return missing + len(abandoned)


def _spread(me: uuid.UUID, resource: str) -> bytes:
    return hashlib.blake2b(me.bytes + resource.encode(), digest_size=8).digest()


# --- the SQL ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    run_id: uuid.UUID
    host: str
    pid: int
    process_space: str
    """Where `pid` names one process: this kernel boot and pid namespace ("" if unknown)."""


def process_space() -> str:
    """This kernel boot's id and this process's pid namespace: two members with the same
    one and the same pid are one process; a pid of it that is not running is a dead member.
    The hostname is not enough: containers on several machines may share one."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class _Round:
    """One round's statements, on one connection, inside the caller's transaction."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], member: Member, ttl_s: float) -> None:
        self.conn = conn
        self.member = member
        self.ttl = {"ttl": f"{ttl_s} seconds"}
        self.me = member.run_id

    async def join(self) -> int:
        """Renew the member row; how many members are live (this one included)."""
        m = self.member
        await self.conn.execute(
            "INSERT INTO recorder_members (run_id, host, pid, process_space, expires_at)"
            " VALUES (%(me)s, %(host)s, %(pid)s, %(space)s, now() + %(ttl)s::interval)"
            " ON CONFLICT (run_id) DO UPDATE SET expires_at = excluded.expires_at",
            {"me": self.me, "host": m.host, "pid": m.pid, "space": m.process_space, **self.ttl},
        )
        await self._expire_the_dead()
        # Members dead a long while are forgotten (lease_history keeps who they were). Until
        # then, a dead member's expiry dates the end of its unclosed stream sessions in
        # `stream_coverage` (migrations/0017): one row per process start, so months are cheap.
        await self.conn.execute(
            "DELETE FROM recorder_members WHERE expires_at < now() - interval '90 days'"
        )
        cursor = await self.conn.execute(
            "SELECT count(*) FROM recorder_members WHERE expires_at > now()"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 1

    async def _expire_the_dead(self) -> None:
        """Members of this process space whose process is gone (a crash, a SIGKILL): their
        leases expire now, to be taken over in this round rather than after their expiry."""
        m = self.member
        if not m.process_space:
            return
        cursor = await self.conn.execute(
            "SELECT run_id, pid FROM recorder_members WHERE process_space = %s"
            " AND run_id <> %s AND expires_at > now()",
            (m.process_space, self.me),
        )
        dead = [run for run, pid in await cursor.fetchall() if pid == m.pid or not running(pid)]
        if dead:
            log.info("recorders of this host found dead: their leases expire now", runs=dead)
            await self.conn.execute(
                "UPDATE recorder_members SET expires_at = now() WHERE run_id = ANY(%s)", (dead,)
            )
            await self.conn.execute(
                "UPDATE leases SET expires_at = now() WHERE owner = ANY(%s)", (dead,)
            )

    async def renew(self, believed: Iterable[str]) -> set[str]:
        """Renew the leases this member believes it holds and still owns (expired or not:
        nobody took them over); the ones renewed. Every other row of this member (dropped by
        the fence or by a delisting) is deleted: free at once."""
        cursor = await self.conn.execute(
            "UPDATE leases SET renewed_at = now(), expires_at = now() + %(ttl)s::interval"
            " WHERE owner = %(me)s AND resource = ANY(%(believed)s)"
            " RETURNING resource",
            {"me": self.me, "believed": list(believed), **self.ttl},
        )
        renewed = {str(r) for (r,) in await cursor.fetchall()}
        cursor = await self.conn.execute(
            "DELETE FROM leases WHERE owner = %(me)s AND NOT resource = ANY(%(renewed)s)"
            " RETURNING resource, acquired_at,"
            " CASE WHEN expires_at <= now() THEN renewed_at ELSE now() END,"
            " CASE WHEN expires_at <= now() THEN 'expired' ELSE 'released' END",
            {"me": self.me, "renewed": list(renewed)},
        )
        for resource, acquired_at, released_at, reason in await cursor.fetchall():
            await self._close(resource, self.me, acquired_at, released_at, reason)
        return renewed

    async def holdings(self) -> list[Holding]:
        cursor = await self.conn.execute(
            "SELECT resource, slot, owner, expires_at > now() FROM leases"
        )
        return [Holding(str(r), int(s), o, bool(live)) for r, s, o, live in await cursor.fetchall()]

    async def claim(self, resource: str, slot: int) -> bool:
        """Take the slot if it is free or expired; False if another member holds it."""
        cursor = await self.conn.execute(
            "SELECT owner, acquired_at, renewed_at, expires_at > now() FROM leases"
            " WHERE resource = %s AND slot = %s FOR UPDATE",
            (resource, slot),
        )
        row = await cursor.fetchone()
        if row is None:
            # Another member may insert the same slot meanwhile: then nothing is inserted.
            cursor = await self.conn.execute(
                "INSERT INTO leases (resource, slot, owner, acquired_at, renewed_at, expires_at)"
                " VALUES (%(r)s, %(s)s, %(me)s, now(), now(), now() + %(ttl)s::interval)"
                " ON CONFLICT DO NOTHING RETURNING resource",
                {"r": resource, "s": slot, "me": self.me, **self.ttl},
            )
            if await cursor.fetchone() is None:
                return False
        else:
            owner, acquired_at, renewed_at, live = row
            if live:
                return False
            await self.conn.execute(
                "UPDATE leases SET owner = %(me)s, acquired_at = now(), renewed_at = now(),"
                " expires_at = now() + %(ttl)s::interval WHERE resource = %(r)s AND slot = %(s)s",
                {"r": resource, "s": slot, "me": self.me, **self.ttl},
            )
            await self._close(resource, owner, acquired_at, renewed_at, "expired")
            metrics.lease_takeovers.inc()
        m = self.member
        await self.conn.execute(
            "INSERT INTO lease_history (resource, owner, host, pid, acquired_at)"
            " VALUES (%s, %s, %s, %s, now()) ON CONFLICT DO NOTHING",
            (resource, self.me, m.host, m.pid),
        )
        return True

    async def release(self, resources: list[str], reason: str) -> None:
        cursor = await self.conn.execute(
            "DELETE FROM leases WHERE owner = %s AND resource = ANY(%s)"
            " RETURNING resource, acquired_at",
            (self.me, resources),
        )
        for resource, acquired_at in await cursor.fetchall():
            await self._close(resource, self.me, acquired_at, None, reason)

    async def leave(self) -> None:
        await self.conn.execute("DELETE FROM recorder_members WHERE run_id = %s", (self.me,))

    async def _close(
        self, resource: str, owner: uuid.UUID, acquired_at: Any, released_at: Any, reason: str
    ) -> None:
        await self.conn.execute(
            "UPDATE lease_history SET released_at = coalesce(%s, now()), reason = %s"
            " WHERE resource = %s AND owner = %s AND acquired_at = %s AND released_at IS NULL",
            (released_at, reason, resource, owner, acquired_at),
        )


# --- the member ---------------------------------------------------------------------------------


class Leases:
    """This process's membership: `run()` keeps it (rounds and the fence); `round()` runs one
    round now (the daemon runs the first before recording, so a recorder alone on its database
    records at once); `release_all()` gives everything up on shutdown."""

    def __init__(
        self,
        dsn: str,
        *,
        run_id: uuid.UUID,
        ttl_s: float,
        redundancy: int,
        on_gained: Change,
        on_lost: Change,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self._dsn = dsn
        self.member = Member(run_id, socket.gethostname(), os.getpid(), process_space())
        self.ttl_s = ttl_s
        self.renew_s = ttl_s / 3
        self.redundancy = redundancy
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._clock = clock
        self._wanted: dict[str, int] = {}
        self.owned: set[str] = set()
        """What this member records now."""
        # A failed round is tried again well within the lease: after a fifth of a renew
        # period at first, never later than a renew period.
        retry = Backoff(initial_s=self.renew_s / 5, max_s=self.renew_s, steady_at_max=True)
        self._ticker = Ticker("leases", self.renew_s, first=None, retry=retry, clock=clock)
        self._valid_until = -math.inf
        """When the fence drops every lease (monotonic), unless a round renews them first."""
        self._renewed = asyncio.Event()
        self._alone = False
        """This member was the only live one at its last round: the fence leaves it be."""
        self._lock = asyncio.Lock()
        """One round at a time (the ticker's, a wake-up's, shutdown's)."""
        self._conn: psycopg.AsyncConnection[Any] | None = None

    # -- what the daemon calls -------------------------------------------------------------

    def want(self, pairs: Iterable[str], *, account: bool) -> None:
        """Record these pairs (and the account if `account`) between the members; a round
        comes at once to claim what is new or give up what is gone."""
        wanted = dict.fromkeys(pairs, self.redundancy)
        if account:
            wanted[ACCOUNT] = 1
        if wanted != self._wanted:
            self._wanted = wanted
            self._ticker.wake("wanted")

    async def drop(self, resources: Iterable[str]) -> None:
        """Stop recording these now (delisted); their rows go at the next round."""
        dropped = sorted(self.owned.intersection(resources))
        if dropped:
            self.owned.difference_update(dropped)
            self._update_gauges(None)
            await self._on_lost(dropped)

    async def run(self) -> NoReturn:
        fence = asyncio.create_task(self._fence(), name="leases-fence")
        try:
            await self._ticker.run(self.round)
        finally:
            fence.cancel()

    async def round(self, reason: str = "start") -> None:
        async with self._lock:
            await self._round()

    async def release_all(self) -> None:
        """Shutdown: give every lease up (recording has stopped), so others take over now."""
        async with self._lock:
            owned, self.owned = sorted(self.owned), set()
            try:
                async with asyncio.timeout(self.renew_s):
                    conn = await self._connection()
                    async with conn.transaction():
                        one = _Round(conn, self.member, self.ttl_s)
                        await one.release(owned, "stopped")
                        await one.leave()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("could not give the leases up: they expire", error=str(exc))
            finally:
                self._update_gauges(None)
                await self._close()

    # -- rounds ------------------------------------------------------------------------------

    async def _round(self) -> None:
        started = self._clock.monotonic()
        try:
            conn = await self._connection()
            async with conn.transaction():
                one = _Round(conn, self.member, self.ttl_s)
                live = await one.join()
                renewed = await one.renew(self.owned)
                holdings = await one.holdings()
                todo = plan(self.member.run_id, self._wanted, holdings, live)
                gained: list[str] = []
                for resource, slot in todo.claim:
                    if len(gained) >= todo.claim_count:
                        break
                    if await one.claim(resource, slot):
                        gained.append(resource)
        except Exception:
            metrics.lease_renew_failures.inc()
            await self._close()  # a connection in doubt is not used again
            raise
        except asyncio.CancelledError:
            await self._close()  # cancelled mid-transaction (shutdown): not reusable either
            raise
        self._valid_until = started + self.ttl_s * (1 - FENCE_MARGIN)
        self._alone = live <= 1
        # What it gives up below stays counted: another member takes it at its next round.
        metrics.leases_unowned.set(unowned(self._wanted, holdings, gained))
        lost = sorted(self.owned - renewed)
        if lost:
            log.warning("leases lost to another recorder: recording them stopped", resources=lost)
            metrics.lease_losses.inc(len(lost))
            self.owned.difference_update(lost)
            await self._on_lost(lost)
        if gained:
            log.info("leases taken: recording", resources=gained, recorders_live=live)
            self.owned.update(gained)
            await self._on_gained(gained)
        release = [r for r in todo.release if r in self.owned]
        if release:
            log.info("leases given up", resources=release, recorders_live=live)
            self.owned.difference_update(release)
            await self._on_lost(release)  # stop recording first, then let the others take it
            async with conn.transaction():
                await _Round(conn, self.member, self.ttl_s).release(release, "released")
        self._update_gauges(live)
        self._renewed.set()

    async def _fence(self) -> NoReturn:
        clock = self._clock
        while True:
            self._renewed.clear()
            if not self.owned:
                await self._renewed.wait()  # set by every round that ends
                continue
            remaining_s = self._valid_until - clock.monotonic()
            if await clock.wait(self._renewed, remaining_s):
                continue
            if clock.monotonic() < self._valid_until or not self.owned:
                continue  # renewed meanwhile
            if self._alone:
                # Nobody to take over: record on (into the spool), renew when able.
                log.warning(
                    "leases past their expiry while alone on the database: recording on",
                    resources=sorted(self.owned),
                )
                await self._renewed.wait()
                continue
            # Even while a round runs (perhaps stuck on a dead connection): it cannot renew
            # what has expired by now, and recording must stop without waiting for it.
            await self._drop_all()

    async def _drop_all(self) -> None:
        dropped, self.owned = sorted(self.owned), set()
        log.error(
            "leases not renewed in time (database lost?): recording stopped until they are",
            resources=dropped,
        )
        metrics.lease_losses.inc(len(dropped))
        self._update_gauges(None)
        await self._on_lost(dropped)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            timeout_s = max(1, int(self.renew_s))
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                connect_timeout=timeout_s,
                # A round that hangs is abandoned well before the fence must act.
                options=f"-c statement_timeout={timeout_s * 1000}",
            )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _update_gauges(self, live: int | None) -> None:
        metrics.leases_owned.set(len(self.owned))
        if live is not None:
            metrics.recorders_live.set(live)
