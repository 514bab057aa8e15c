"""The `recorder` command line: parse arguments, load the configuration, dispatch.

Each command gets a validated, frozen `Config`; configuration problems end here with exit
code 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder import exitcodes
from recorder.config import Config, ConfigError, load_config
from recorder.logs import configure_logging, get_logger, redact_secrets
from recorder.sim import cli as sim_cli

if TYPE_CHECKING:
    import psycopg

Command = Callable[[argparse.Namespace, Config], int]


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    """Print the effective configuration as TOML, secrets masked."""
    source = args.config or "defaults"
    print(f"# effective configuration: {source}, then RECORDER_<SECTION>__<KEY> variables")
    print("# secrets are masked")
    print(render_toml(config.model_dump(mode="json")))
    return exitcodes.OK


def render_toml(document: dict[str, Any]) -> str:
    """TOML for a document of tables holding scalars and lists (what `Config` dumps to)."""
    lines: list[str] = []
    for section, table in document.items():
        lines.append(f"\n[{section}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {key} is not set")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines).lstrip("\n")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string without non-ASCII escapes is a valid TOML basic string.
    return json.dumps(str(value), ensure_ascii=False)


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    """Apply pending migrations to the configured (or embedded) database, then exit."""
    # Imported here so that commands which need no database start fast.
    import psycopg

    from recorder.storage.embedded import database_dsn
    from recorder.storage.migrate import MigrationError, migrate

    log = get_logger("recorder.migrate")
    try:
        with database_dsn(config.database, config.recorder.data_dir) as dsn:
            applied = migrate(dsn)
    except MigrationError as exc:
        log.error("cannot migrate", problem=str(exc))
        return exitcodes.STARTUP_FAILURE
    except psycopg.OperationalError as exc:
        log.error("cannot reach the database", problem=str(exc))
        return exitcodes.STARTUP_FAILURE
    if applied:
        log.info("migrations applied", versions=applied)
    else:
        log.info("the database schema is up to date")
    return exitcodes.OK


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """The daemon: record until SIGTERM/SIGINT; with --workers, N of them under a parent."""
    if args.workers:
        from recorder.workers import run_workers

        return run_workers(config, args.config, args.workers)
    from recorder.daemon import run

    return run(config)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=0,
        metavar="N",
        help="run N recorder processes under one parent, sharing the pairs through the "
        "database (docs/operations.md, 'Running several recorders')",
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a number of workers (1 or more): {text!r}")
    return int(text)


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    """Embedded PostgreSQL + simulated exchange + recorder, for a first look."""
    from recorder.demo import run_demo

    return run_demo(config, sim_port=args.sim_port)


def cmd_sql(args: argparse.Namespace, config: Config) -> int:
    """Run one SQL query on the recorder's database and print the rows as a table."""
    import psycopg

    def query() -> int:
        with read_only_connection(config) as conn:
            try:
                cursor = conn.execute(args.query.encode())
                columns = [column.name for column in cursor.description or []]
                found = cursor.fetchall() if cursor.description is not None else []
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) or exc.sqlstate is None:
                    raise
                # The query is an argument: one the database refuses (bad syntax, an
                # unknown table, a write) is the caller's to fix.
                raise BadArgument(f"the database refused the query: {_text(exc)}") from None
        rows = [[("" if v is None else str(v)) for v in row] for row in found]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        print(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        print("-+-".join("-" * w for w in widths))
        for row in rows:
            print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        print(f"({len(rows)} rows)")
        return exitcodes.OK

    return reading_database("sql", query)


def cmd_coverage(args: argparse.Namespace, config: Config) -> int:
    """Summarize what was recorded per pair, with the stream's gaps and their causes."""
    from recorder.research.coverage import format_report, load_report
    from recorder.research.export import parse_time

    def summarize() -> int:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        if args.plot is not None:
            from recorder.research.plot import plot_format

            plot_format(args.plot)  # a bad suffix fails before the database is started
        with read_only_connection(config) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            report = load_report(conn, args.pair, since, until)
        print(format_report(report))
        if args.plot is not None:
            from recorder.research.plot import write_plot

            write_plot(report, args.plot)
            print(f"recorder coverage: plot written to {args.plot}", file=sys.stderr)
        return exitcodes.OK

    return reading_database("coverage", summarize)


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    """Stream one table of a pair and time range to a Parquet or CSV file."""
    from recorder.research.export import Selection, export, parse_time
    from recorder.storage.embedded import database_dsn

    def write() -> int:
        selection = Selection(
            table=args.table,
            pair=args.pair,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
        )
        selection.query()  # a bad table or filter fails before the database is started
        with database_dsn(config.database, config.recorder.data_dir) as dsn:
            rows = export(dsn, selection, args.format, args.out, batch_rows=args.batch_rows)
        written = f"{rows} rows of {args.table} written to {args.out}"
        print(f"recorder export: {written}", file=sys.stderr)
        return exitcodes.OK

    return reading_database("export", write)


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    """Serve a recorded period through the simulated exchange, until SIGINT/SIGTERM."""
    from recorder.sim.replay import ReplayError
    from recorder.storage.embedded import database_dsn

    def serve() -> int:
        with database_dsn(config.database, config.recorder.data_dir) as dsn:
            try:
                return sim_cli.cmd_replay(args, dsn)
            except ReplayError as exc:
                raise BadArgument(str(exc)) from None

    return reading_database("replay", serve)


@contextmanager
def read_only_connection(config: Config) -> Iterator[psycopg.Connection[Any]]:
    """A read-only connection to the configured (or embedded) database."""
    import psycopg

    from recorder.storage.embedded import database_dsn

    with (
        database_dsn(config.database, config.recorder.data_dir) as dsn,
        psycopg.connect(dsn) as conn,
    ):
        conn.read_only = True
        yield conn


class BadArgument(Exception):
    """A command's argument cannot be used; the message says why."""


def reading_database(command: str, body: Callable[[], int]) -> int:
    """Run `body` of a command that reads the database, ending its errors in an exit code.

    A bad argument (a time, a table, a query the database refuses) exits 2; a database that
    cannot be reached, or fails while answering, exits 3.
    """
    import psycopg

    from recorder.research.export import ExportError
    from recorder.research.plot import PlotError

    try:
        return body()
    except (BadArgument, ExportError, PlotError) as exc:
        print(f"recorder {command}: {exc}", file=sys.stderr)
        return exitcodes.BAD_CONFIG
    except psycopg.Error as exc:
        print(f"recorder {command}: cannot use the database: {_text(exc)}", file=sys.stderr)
        return exitcodes.STARTUP_FAILURE


def _text(exc: Exception) -> str:
    return str(exc).strip()  # psycopg's messages end in a newline


def cmd_probe(args: argparse.Namespace, config: Config) -> int:
    """Ask the configured exchange what the docs leave open; exit 1 if recording would fail."""
    import asyncio

    from recorder.probe import probe

    report = asyncio.run(probe(config, args.seconds))
    print(report.to_json() if args.json else report.to_table())
    return report.exit_code


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=10.0,
        metavar="N",
        help="how long to listen to the socket.io book stream (default 10)",
    )
    parser.add_argument("--json", action="store_true", help="a JSON document instead of a table")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", help="only this pair, e.g. BTC_USD")
    parser.add_argument("--since", help="from this instant (ISO 8601; UTC without a zone)")
    parser.add_argument("--until", help="before this instant (ISO 8601; UTC without a zone)")


def add_coverage_arguments(parser: argparse.ArgumentParser) -> None:
    add_window_arguments(parser)
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw each pair's timeline into FILE (.png, .svg or .html)",
    )


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from recorder.research.export import FORMATS, SOURCES

    parser.add_argument("--table", required=True, choices=sorted(SOURCES))
    add_window_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="parquet")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE")
    parser.add_argument(
        "--batch-rows", type=int, default=50_000, help="rows per batch (Parquet row group)"
    )


def add_sql_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="one SQL statement, run in a read-only transaction")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sim-port", type=int, default=0, help="port of the simulated exchange (0: a free one)"
    )


COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (cmd_run, "record the exchange into the database until SIGTERM/SIGINT"),
    "demo": (cmd_demo, "embedded PostgreSQL + simulated exchange + recorder, for a first look"),
    "sql": (cmd_sql, "run a read-only SQL query on the recorder's database and print the rows"),
    "coverage": (cmd_coverage, "what was recorded per pair, with the stream's gaps and causes"),
    "export": (cmd_export, "stream a table of a pair and time range to Parquet or CSV"),
    "probe": (cmd_probe, "check a live exchange: what the docs leave open, would recording work"),
    "config": (cmd_config, "print the effective configuration (secrets masked)"),
    "migrate": (cmd_migrate, "apply pending database migrations and exit"),
    "sim": (sim_cli.cmd_sim, "run the simulated bitexbit exchange (REST + socket.io)"),
    "replay": (cmd_replay, "serve a recorded period through the simulated exchange's API"),
}

ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "run": add_run_arguments,
    "sim": sim_cli.add_arguments,
    "replay": sim_cli.add_replay_arguments,
    "demo": add_demo_arguments,
    "sql": add_sql_arguments,
    "coverage": add_coverage_arguments,
    "export": add_export_arguments,
    "probe": add_probe_arguments,
}
"""A command's own arguments, besides --config which every command takes."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recorder",
        description="Record the bitexbit exchange's public market data into PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=version("bitexbit-recorder"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="TOML configuration file (default: built-in defaults); "
            "RECORDER_<SECTION>__<KEY> variables override it",
        )
        if name in ARGUMENTS:
            ARGUMENTS[name](sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"recorder: configuration: {problem}", file=sys.stderr)
        return exitcodes.BAD_CONFIG
    redact_secrets(config.secrets())
    configure_logging(config.logging.level, config.logging.format)
    command, _ = COMMANDS[args.command]
    return command(args, config)
