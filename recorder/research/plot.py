"""`recorder coverage --plot FILE`: the coverage report as a picture, one timeline per pair.

Two layers. `layout` is pure: from a `Report` (recorder/research/coverage.py) it decides what
each pair's timeline shows, as plain intervals and instants, so what gets drawn is tested
without a plotting library. `render` and `write_plot` draw that layout with matplotlib
(the `research` extra), imported only when a picture is asked for.

Each pair's timeline has four lanes over the report's window:

- stream: when a connection was live, drawn as the union of the sessions (a recorder keeps
  several connections at once, so sessions overlap), and the gaps where none was, coloured
  by their cause. The sessions are the stream's, not the pair's: every pair shows the same.
- snapshots: a tick at each snapshot taken, a short grey one where book_at passes over it
  (asked for while the stream was not subscribed: `book_snapshots.in_sync`);
- tape holes: a tick at each fill seen on the socket and missing from the trade tape;
- candle holes: the stretches missing from the exchange's candles while the tape has trades.

The file's suffix picks the format: `.png`, `.svg` (text kept as text, so the pair names
and causes can be searched) or `.html` (a page holding that SVG).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from recorder.research.coverage import Report, Session

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SUFFIXES = (".png", ".svg", ".html")

LANES = ("candle holes", "tape holes", "snapshots", "stream")
"""The lanes of a pair's timeline, bottom to top (its y position is the index)."""

LIVE_COLOUR = "#2ca02c"
GAP_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
"""One per distinct gap cause, in the order the causes first appear."""
SNAPSHOT_COLOUR = "#1f77b4"
UNFOLLOWED_COLOUR = "#9e9e9e"
HOLE_COLOUR = "#000000"


class PlotError(ValueError):
    """A plot cannot be written as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime
    label: str = ""


@dataclass(frozen=True, slots=True)
class PairTimeline:
    """What one pair's timeline shows."""

    pair: str
    live: tuple[Span, ...]
    """The stream's live time, overlapping sessions merged, within the window."""
    gaps: tuple[Span, ...]
    """The stream's gaps within the window, each labelled with its cause."""
    snapshots: tuple[datetime, ...]
    unfollowed_snapshots: tuple[datetime, ...]
    """Snapshots book_at passes over."""
    tape_holes: tuple[datetime, ...]
    candle_holes: tuple[Span, ...]
    """Labelled with the candles' resolution ("1", "5", ... "D")."""
    delisted_at: datetime | None


@dataclass(frozen=True, slots=True)
class Layout:
    start: datetime
    end: datetime
    pairs: tuple[PairTimeline, ...]
    causes: tuple[str, ...]
    """The distinct gap causes in order of first appearance; a gap's colour is its index."""


def merged(sessions: list[Session], start: datetime, end: datetime) -> tuple[Span, ...]:
    """The union of the sessions within [start, end): disjoint spans in order."""
    spans: list[Span] = []
    clipped = sorted(
        (max(s.connected_at, start), min(s.ended_at, end))
        for s in sessions
        if s.ended_at > start and s.connected_at < end and s.ended_at > s.connected_at
    )
    for begin, finish in clipped:
        if spans and begin <= spans[-1].end:
            if finish > spans[-1].end:
                spans[-1] = Span(spans[-1].start, finish)
        else:
            spans.append(Span(begin, finish))
    return tuple(spans)


def cause_label(cause: str | None) -> str:
    return cause or "unknown"


def layout(report: Report) -> Layout:
    """What each pair's timeline shows, clipped to the report's window."""
    start, end = report.start, report.end
    live = merged(report.sessions, start, end)
    gaps = tuple(
        Span(max(g.start, start), min(g.end, end), cause_label(g.cause))
        for g in report.gaps
        if g.end > start and g.start < end
    )
    causes = tuple(dict.fromkeys(g.label for g in gaps))
    pairs = tuple(
        PairTimeline(
            pair=p.pair,
            live=live,
            gaps=gaps,
            snapshots=tuple(t for t in p.snapshot_times if start <= t < end),
            unfollowed_snapshots=tuple(t for t in p.unfollowed_snapshot_times if start <= t < end),
            tape_holes=tuple(t for t in p.tape_hole_times if start <= t < end),
            candle_holes=tuple(
                Span(max(h.start, start), min(h.end, end), h.resolution)
                for h in p.candle_hole_spans
                if h.end > start and h.start < end
            ),
            delisted_at=p.last_listed,
        )
        for p in report.pairs
    )
    return Layout(start, end, pairs, causes)


def plot_format(path: Path) -> str:
    """The format a plot file's suffix asks for ("png", "svg" or "html"); PlotError if none."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PlotError(
            f"--plot: {str(path)!r} must end in {', '.join(SUFFIXES[:-1])} or {SUFFIXES[-1]}"
        )
    return suffix[1:]


def render(report: Report) -> Figure:
    """The figure of the report's layout: one axes per pair, all on one time axis."""
    try:
        from matplotlib import dates
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise PlotError(
            "--plot needs matplotlib: pip install 'bitexbit-recorder[research]'"
        ) from exc
    num = cast(Callable[[datetime], float], dates.date2num)  # matplotlib's days since 1970
    drawn = layout(report)
    rows = max(1, len(drawn.pairs))
    figure = Figure(figsize=(11, 0.6 + 1.6 * rows), dpi=100, layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    x0, x1 = num(drawn.start), num(drawn.end)
    gap_colour = {c: GAP_COLOURS[i % len(GAP_COLOURS)] for i, c in enumerate(drawn.causes)}

    def bars(spans: tuple[Span, ...]) -> list[tuple[float, float]]:
        return [(num(s.start), num(s.end) - num(s.start)) for s in spans]

    for ax, timeline in zip(axes, drawn.pairs, strict=False):
        stream = LANES.index("stream")
        ax.broken_barh(bars(timeline.live), (stream - 0.35, 0.7), color=LIVE_COLOUR,
                       gid=f"live-{timeline.pair}")  # fmt: skip
        for i, gap in enumerate(timeline.gaps):
            ax.broken_barh(bars((gap,)), (stream - 0.35, 0.7), color=gap_colour[gap.label],
                           gid=f"gap-{timeline.pair}-{i}")  # fmt: skip
        ticks = LANES.index("snapshots")
        ax.vlines([num(t) for t in timeline.snapshots], ticks - 0.35, ticks + 0.35,
                  color=SNAPSHOT_COLOUR, linewidth=1, gid=f"snapshots-{timeline.pair}")  # fmt: skip
        ax.vlines([num(t) for t in timeline.unfollowed_snapshots], ticks - 0.2, ticks + 0.2,
                  color=UNFOLLOWED_COLOUR, linewidth=1,
                  gid=f"unfollowed-snapshots-{timeline.pair}")  # fmt: skip
        holes = LANES.index("tape holes")
        ax.vlines([num(t) for t in timeline.tape_holes], holes - 0.35, holes + 0.35,
                  color=HOLE_COLOUR, linewidth=1.5, gid=f"tape-holes-{timeline.pair}")  # fmt: skip
        candles = LANES.index("candle holes")
        ax.broken_barh(bars(timeline.candle_holes), (candles - 0.35, 0.7), color=HOLE_COLOUR,
                       gid=f"candle-holes-{timeline.pair}")  # fmt: skip
        if timeline.delisted_at is not None and drawn.start <= timeline.delisted_at < drawn.end:
            ax.axvline(num(timeline.delisted_at), color="black", linestyle="--")
        title = timeline.pair + (" (delisted)" if timeline.delisted_at is not None else "")
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        ax.set_yticks(range(len(LANES)), LANES, fontsize=8)
        ax.set_ylim(-0.6, len(LANES) - 0.4)
        ax.set_xlim(x0, x1)
        ax.set_axisbelow(True)  # the grid under the bars, so no grid line tints a gap
        ax.grid(axis="x", alpha=0.3)
    if not drawn.pairs:
        axes[0].set_title("no pairs recorded in this window", loc="left", fontsize=10)
        axes[0].set_xlim(x0, x1)
    locator = dates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    concise = dates.ConciseDateFormatter(locator, tz="UTC")  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_formatter(concise)
    axes[-1].set_xlabel("UTC")
    legend = [Patch(color=LIVE_COLOUR, label="stream live")] + [
        Patch(color=gap_colour[c], label=f"gap: {c}") for c in drawn.causes
    ]
    legend += [Patch(color=SNAPSHOT_COLOUR, label="snapshot")]
    if any(timeline.unfollowed_snapshots for timeline in drawn.pairs):
        legend += [Patch(color=UNFOLLOWED_COLOUR, label="snapshot book_at passes over")]
    legend += [Patch(color=HOLE_COLOUR, label="tape / candle hole")]
    figure.legend(handles=legend, loc="outside upper center", ncols=min(4, len(legend)),
                  fontsize=8, frameon=False)  # fmt: skip
    return figure


def write_plot(report: Report, path: Path) -> None:
    """Draw the report into `path`, in the format its suffix names."""
    kind = plot_format(path)
    figure = render(report)
    from matplotlib import rc_context

    # Text as <text> elements rather than glyph outlines: the SVG stays small and searchable.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "recorder"}):
        if kind == "png":
            figure.savefig(path, format="png")
            return
        svg = io.StringIO()
        figure.savefig(svg, format="svg")
    if kind == "svg":
        path.write_text(svg.getvalue(), encoding="utf-8")
        return
    title = html.escape(f"recorder coverage {report.start:%Y-%m-%d %H:%M} to {report.end:%H:%M}")
    body = svg.getvalue()
    body = body[body.index("<svg") :]  # the XML declaration and doctype have no place in HTML
    path.write_text(
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>{title}'
        f"</title></head>\n<body>\n{body}\n</body>\n</html>\n",
        encoding="utf-8",
    )


__all__ = [
    "SUFFIXES",
    "Layout",
    "PairTimeline",
    "PlotError",
    "Span",
    "layout",
    "merged",
    "plot_format",
    "render",
    "write_plot",
]
