"""`recorder coverage --plot`: the picture of a real recording shows the outage the test
caused where the report puts it, and the snapshots where they were taken.

What gets drawn (`layout`) is pure and tested on its own first, without matplotlib.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from recorder.cli import main
from recorder.research.coverage import CandleHole, Gap, PairCoverage, Report, Session, load_report
from recorder.research.plot import (
    GAP_COLOURS,
    LANES,
    LIVE_COLOUR,
    PlotError,
    Span,
    layout,
    plot_format,
    render,
)
from tests.research.conftest import PAIRS, Recording

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pair(name: str, **marks: object) -> PairCoverage:
    return PairCoverage(name, 0, None, None, 0, 0, 0, None, None, 0, 0, 0, **marks)  # type: ignore[arg-type]


def test_layout_merges_overlapping_sessions_and_clips_everything_to_the_window() -> None:
    report = Report(
        start=at(10),
        end=at(100),
        sessions=[
            Session(at(0), at(30), "closed", "transport close"),
            Session(at(20), at(40), "closed", "ping timeout"),  # a second connection
            Session(at(40), at(45), "closed", "ping timeout"),  # starts as the last ends
            Session(at(50), at(50), "unclosed", None),  # never live
            Session(at(60), at(200), "open", None),
        ],
        gaps=[Gap(at(45), at(60), "ping timeout"), Gap(at(0), at(5), None)],
        pairs=[
            pair(
                "BTC_USD",
                snapshot_times=(at(5), at(12), at(61)),
                unfollowed_snapshot_times=(at(11), at(100)),
                tape_hole_times=(at(70), at(100)),
                candle_hole_spans=(CandleHole("1", at(0), at(20), 3),),
                last_listed=at(90),
            ),
            pair("ETH_USD"),
        ],
    )
    drawn = layout(report)
    assert (drawn.start, drawn.end) == (at(10), at(100))
    btc, eth = drawn.pairs
    assert btc.live == (Span(at(10), at(45)), Span(at(60), at(100)))
    assert btc.gaps == (Span(at(45), at(60), "ping timeout"),)  # the other ends before
    assert drawn.causes == ("ping timeout",)
    assert btc.snapshots == (at(12), at(61))
    assert btc.unfollowed_snapshots == (at(11),)
    assert btc.tape_holes == (at(70),)
    assert btc.candle_holes == (Span(at(10), at(20), "1"),)
    assert btc.delisted_at == at(90)
    # The stream is the recorder's, not a pair's: every pair shows the same.
    assert (eth.live, eth.gaps) == (btc.live, btc.gaps)
    assert (eth.snapshots, eth.tape_holes, eth.candle_holes) == ((), (), ())


def test_gaps_of_the_same_cause_share_a_colour_slot() -> None:
    report = Report(
        at(0),
        at(100),
        [Session(at(0), at(10), "closed", "a"), Session(at(20), at(30), "closed", "b")],
        [Gap(at(10), at(20), "a"), Gap(at(30), at(40), None), Gap(at(50), at(60), "a")],
    )
    assert layout(report).causes == ("a", "unknown")


@pytest.mark.parametrize("name", ["out.pdf", "out", "out.png.txt"])
def test_only_png_svg_and_html_are_written(name: str) -> None:
    with pytest.raises(PlotError, match="--plot"):
        plot_format(Path(name))
    assert [plot_format(Path(f"a.{s}")) for s in ("png", "SVG", "html")] == ["png", "svg", "html"]


def test_the_coverage_command_refuses_another_suffix_naming_the_option(
    recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "coverage.pdf"
    assert main(["coverage", "--config", str(recording.config_path), "--plot", str(out)]) == 2
    assert "--plot" in capsys.readouterr().err
    assert not out.exists()


def window_report(recording: Recording) -> Report:
    """The report of the stream's sessions (the trade history reaches far back before them),
    so that the outage is wide enough to look at."""
    with psycopg.connect(recording.dsn) as conn:
        sessions = load_report(conn).sessions
        since = sessions[0].connected_at - timedelta(seconds=1)
        until = max(s.ended_at for s in sessions) + timedelta(seconds=1)
        return load_report(conn, since=since, until=until)


def test_the_png_shows_the_outage_where_the_report_puts_it(
    recording: Recording, tmp_path: Path
) -> None:
    from matplotlib import colors, image
    from matplotlib.dates import date2num

    report = window_report(recording)
    (gap,) = report.gaps
    figure = render(report)
    path = tmp_path / "coverage.png"
    figure.savefig(path, format="png")  # drawing it settles the layout the transforms use
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert (width, height) == tuple(round(v) for v in figure.bbox.size)

    def colour_at(ax_index: int, moment: datetime) -> tuple[float, ...]:
        x, y = figure.axes[ax_index].transData.transform((date2num(moment), LANES.index("stream")))
        return tuple(float(v) for v in pixels[height - round(y), round(x)])

    def rgba(colour: str) -> object:
        """The colour as 8-bit PNG pixels hold it: a channel may be one level off where
        antialiasing of a nearby edge reaches (CI once read #d62728's green as 40/255)."""
        return pytest.approx(colors.to_rgba(colour), abs=2 / 255)

    middle = gap.start + (gap.end - gap.start) / 2
    first_live = report.sessions[0].connected_at + (gap.start - report.sessions[0].connected_at) / 2
    assert [p.pair for p in report.pairs] == sorted(PAIRS)
    for index in range(len(PAIRS)):
        assert colour_at(index, middle) == rgba(GAP_COLOURS[0])
        assert colour_at(index, first_live) == rgba(LIVE_COLOUR)


def test_the_svg_names_the_pairs_and_draws_the_gap_and_each_snapshot_where_the_report_says(
    recording: Recording, tmp_path: Path
) -> None:
    from matplotlib import rc_context
    from matplotlib.dates import date2num

    report = window_report(recording)
    (gap,) = report.gaps
    figure = render(report)
    path = tmp_path / "coverage.svg"
    with rc_context({"svg.fonttype": "none"}):
        figure.savefig(path, format="svg")
    root = ET.parse(path).getroot()  # noqa: S314 - a file this test just wrote
    texts = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert set(PAIRS) <= texts
    assert f"gap: {gap.cause}" in texts
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g")}
    points_per_pixel = 72 / figure.dpi  # SVG units are points

    def x_in_svg(ax_index: int, moment: datetime) -> float:
        x, _ = figure.axes[ax_index].transData.transform((date2num(moment), 0))
        return float(x) * points_per_pixel

    def xs(group: ET.Element) -> list[float]:
        """The x of every path's first point, in document order."""
        found = []
        for path_element in group.iter(f"{SVG}path"):
            start = re.match(r"M\s*(-?[\d.]+)", path_element.get("d", ""))
            assert start is not None
            found.append(float(start.group(1)))
        return found

    for index, pair in enumerate(report.pairs):
        bar = groups[f"gap-{pair.pair}-0"]
        (left,) = xs(bar)
        assert left == pytest.approx(x_in_svg(index, gap.start), abs=0.5)
        ticks = xs(groups[f"snapshots-{pair.pair}"])
        assert pair.snapshot_times  # one at each connect at least
        expected = [x_in_svg(index, t) for t in pair.snapshot_times]
        assert ticks == pytest.approx(expected, abs=0.5)
        # A start's snapshot usually goes out before the stream is subscribed: book_at
        # passes over it, and the picture shows it apart.
        unfollowed = xs(groups[f"unfollowed-snapshots-{pair.pair}"])
        expected = [x_in_svg(index, t) for t in pair.unfollowed_snapshot_times]
        assert unfollowed == pytest.approx(expected, abs=0.5)
    shown = any(pair.unfollowed_snapshot_times for pair in report.pairs)
    assert ("snapshot book_at passes over" in texts) == shown


def test_the_coverage_command_writes_png_svg_and_html(
    recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["coverage", "--config", str(recording.config_path)]
    for suffix in ("png", "svg", "html"):
        out = tmp_path / f"coverage.{suffix}"
        assert main([*config, "--plot", str(out)]) == 0
        printed = capsys.readouterr()
        assert "1 gaps" in printed.out  # the summary is printed as without --plot
        assert str(out) in printed.err
    assert (tmp_path / "coverage.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    svg = ET.parse(tmp_path / "coverage.svg").getroot()  # noqa: S314 - written just now
    texts = {"".join(t.itertext()).strip() for t in svg.iter(f"{SVG}text")}
    assert set(PAIRS) <= texts
    page = (tmp_path / "coverage.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert all(f">{p}<" in page for p in PAIRS)
