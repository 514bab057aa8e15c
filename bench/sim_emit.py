#!/usr/bin/env python3
"""How many book events per second `recorder sim` emits to one socket.io subscriber.

    .venv/bin/python bench/sim_emit.py [--seconds 10] [--rate 1000000] [--pairs BTC_USD,ETH_USD]

Starts `recorder sim` as its own process (as the recorder's benchmarks use it) with the
order flow paused and no history, subscribes one python-socketio client to every pair's
channel, resumes the flow, and counts the events that arrive during the measured window
(after a warm-up second). The rate asked of the order flow is
far above what can be sent, so the number is the simulator's ceiling on this machine: the
flow waits whenever the outbox is full. After pausing the flow again it prints the sim's own
counters (`/admin/state`) beside the client's: made = emitted = received shows that nothing
was lost on the way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp
import socketio


async def admin(http: aiohttp.ClientSession, url: str, action: str) -> dict[str, Any]:
    method = http.get if action == "state" else http.post
    async with method(f"{url}/admin/{action}") as response:
        return await response.json()  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, pairs: list[str], seconds: float, sim_pid: int) -> None:
    received = 0

    def count(*_: object) -> None:
        nonlocal received
        received += 1

    client = socketio.AsyncClient(reconnection=False)
    for pair in pairs:
        client.on(f"book_{pair}", count)
    await client.connect(url, transports=["websocket"])
    for pair in pairs:
        await client.call("subscribe", f"book_{pair}")
    async with aiohttp.ClientSession() as http:
        await admin(http, url, "resume")
        await asyncio.sleep(1.0)  # warm-up
        start_count, start_s, start_cpu_s = received, time.monotonic(), cpu_seconds(sim_pid)
        await asyncio.sleep(seconds)
        events, elapsed_s = received - start_count, time.monotonic() - start_s
        end_cpu_s = cpu_seconds(sim_pid)
        print(f"received {events} events in {elapsed_s:.2f} s: {events / elapsed_s:,.0f} events/s")
        if start_cpu_s is not None and end_cpu_s is not None:
            busy = (end_cpu_s - start_cpu_s) / elapsed_s
            print(f"the simulator process used {busy:.0%} of one CPU meanwhile")
        await admin(http, url, "pause")
        state = await admin(http, url, "state")
        deadline_s = time.monotonic() + 10
        while (
            state["outbox"] or received < state["emitted_count"]
        ) and time.monotonic() < deadline_s:
            await asyncio.sleep(0.05)
            state = await admin(http, url, "state")
    print(
        f"after pausing: made {state['event_count']}, emitted {state['emitted_count']}, "
        f"received {received}"
    )
    await client.disconnect()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1_000_000.0)
    parser.add_argument("--pairs", default="BTC_USD,ETH_USD")
    args = parser.parse_args()
    command = [
        sys.executable,
        "-m",
        "recorder",
        "sim",
        "--port",
        "0",
        "--history-hours",
        "0",
        "--rate",
        str(args.rate),
        "--pairs",
        args.pairs,
        "--paused",
    ]
    sim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        while "serving" not in line:
            if not line:
                print("recorder sim did not start", file=sys.stderr)
                return 1
            line = sim.stdout.readline()
        url = line.split()[3]
        asyncio.run(measure(url, args.pairs.split(","), args.seconds, sim.pid))
    finally:
        sim.terminate()
        sim.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
