"""The deployment files under deploy/ (and the top-level compose file and Dockerfile) hold up.

Checked with the real tools where this machine can have them without a Docker engine:
promtool (rules, their unit tests, the Prometheus config, and a live /metrics scrape),
check-jsonschema (the Compose spec), systemd-analyze (the unit). Outside CI a missing tool
skips its test with the reason; in CI (the CI variable set) it fails instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY, start_http_server

# Imported for their side effect: every metric of the recorder is registered in REGISTRY.
import recorder.metrics
import recorder.storage.writer
import recorder.supervisor
from tests.harness import debian_tools
from tests.harness.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "recorder.json"
IN_CI = bool(os.environ.get("CI"))

# Names the dashboard, the alert rules and the operators rely on (docs/operations.md).
PROMISED_METRICS = {
    "recorder_socket_connected",
    "recorder_socket_reconnects",
    "recorder_socket_events",
    "recorder_last_event_timestamp_seconds",
    "recorder_malformed_messages",
    "recorder_http_requests",
    "recorder_http_request_duration_seconds",
    "recorder_rows_written",
    "recorder_write_buffer_rows",
    "recorder_db_write_duration_seconds",
    "recorder_db_up",
    "recorder_book_resyncs",
    "recorder_book_drift",
    "recorder_trades_backfilled",
}


def unavailable(reason: str) -> None:
    """Skip a test whose tool is missing; in CI that is a failure instead."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this check)")
    pytest.skip(reason)


def run(*command: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


# --- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool from Debian's prometheus package (see tests/harness/debian_tools.py)."""
    try:
        return debian_tools.promtool()
    except debian_tools.ToolUnavailable as exc:
        unavailable(str(exc))
        raise


def test_alert_rules_are_valid(promtool: Path) -> None:
    result = run(promtool, "check", "rules", PROMETHEUS / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_when_they_should(promtool: Path) -> None:
    # alerts_test.yml names alerts.yml relative to itself.
    result = subprocess.run(
        [str(promtool), "test", "rules", "alerts_test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid(promtool: Path) -> None:
    result = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def metrics_url() -> Iterator[str]:
    """The project's registry served over HTTP on a free loopback port, as the daemon does."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=REGISTRY)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def touch_every_metric() -> None:
    """Give each labelled metric a child, so that the scrape shows every one with samples."""
    m = recorder.metrics
    m.socket_connected.set(1)
    m.socket_reconnects.inc()
    m.stream_connections_up.set(2)
    m.stream_connected.labels("0").set(1)
    m.stream_reconnects.labels("0").inc()
    m.stream_connect_failures.labels("0").inc()
    m.stream_events.labels("0").inc(3)
    m.stream_first_events.labels("0").inc(2)
    m.stream_silences.labels("0", "BTC_USD", "resubscribe").inc()
    m.socket_events.labels("BTC_USD", "new").inc(3)
    m.last_event_timestamp.labels("BTC_USD").set_to_current_time()
    m.malformed_messages.labels("socket").inc()
    m.http_requests.labels("orderbook", "200").inc()
    m.http_requests.labels("exchanges", "429").inc()
    m.http_request_duration.labels("orderbook").observe(0.12)
    m.rows_written.labels("trades").inc(10)
    m.db_write_duration.observe(0.03)
    m.book_resyncs.labels("BTC_USD", "connect").inc()
    m.book_drift.labels("BTC_USD").inc()
    m.trades_backfilled.labels("BTC_USD").inc(100)
    m.event_lag.labels("BTC_USD").observe(0.2)
    m.snapshot_duration.labels("BTC_USD").observe(0.4)
    m.snapshot_orders.labels("BTC_USD", "buy").set(120)
    m.last_snapshot_timestamp.labels("BTC_USD").set_to_current_time()
    m.last_trade_timestamp.labels("BTC_USD").set(1_700_000_000.5)
    m.backfill_in_progress.labels("BTC_USD").set(1)
    m.backfill_cursor_timestamp.labels("BTC_USD").set(1_690_000_000)
    m.last_flush_timestamp.set_to_current_time()
    recorder.supervisor.task_failures.labels("stream").inc()


def test_live_scrape_passes_promtool_check_metrics(promtool: Path, metrics_url: str) -> None:
    touch_every_metric()
    body = httpx.get(metrics_url, timeout=10).raise_for_status().content
    names = set(re.findall(rb"^# TYPE (\S+)", body, re.MULTILINE))
    assert {n.encode() for n in PROMISED_METRICS} <= {n.removesuffix(b"_total") for n in names}
    result = run(promtool, "check", "metrics", stdin=body)
    # promtool prints lint problems (bad names, missing help, ...) and exits non-zero.
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus sees it once Grafana filled in its variables."""
    return expr.replace("$__rate_interval", "1m").replace("$pair", ".*")


def test_real_prometheus_scrapes_evaluates_rules_and_dashboard_queries(
    promtool: Path, metrics_url: str, tmp_path: Path
) -> None:
    """Debian's Prometheus server scrapes the live registry with our rules loaded.

    Every rule must evaluate without error, and every dashboard query must be valid PromQL
    that returns data once each metric has a sample.
    """
    try:
        prometheus = debian_tools.prometheus_server()
    except debian_tools.ToolUnavailable as exc:
        unavailable(str(exc))
        raise
    touch_every_metric()
    target = metrics_url.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(PROMETHEUS / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "recorder", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log_path = tmp_path / "prometheus.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            str(prometheus),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            "--web.listen-address=127.0.0.1:0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def running(check: Callable[[], Any]) -> Callable[[], Any]:
            def checked() -> Any:
                assert server.poll() is None, log_path.read_text()
                return check()

            return checked

        def bound_port() -> int:
            """The port Prometheus says it listens on (it was asked for any free one)."""
            listening = r'msg="Listening on" address=127\.0\.0\.1:(\d+)'
            found = re.search(listening, log_path.read_text())
            return int(found.group(1)) if found else 0

        port = asyncio.run(eventually(running(bound_port), what="Prometheus listening"))
        api = f"http://127.0.0.1:{port}/api/v1"

        def query(expr: str) -> list[Any]:
            answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()
            assert answer["status"] == "success", (expr, answer)
            return list(answer["data"]["result"])

        def rules() -> list[dict[str, Any]]:
            groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            return [rule for group in groups for rule in group["rules"]]

        def ready() -> bool:
            return bool(query('up{job="recorder"} == 1')) and all(
                rule["health"] != "unknown" for rule in rules()
            )

        def scraped_thrice() -> list[Any]:
            """A few more scrapes, so that rate() over them has two samples."""
            return query('count_over_time(up{job="recorder"}[1m]) >= 3')

        not_yet = (httpx.TransportError, ValueError)  # not up, or not serving JSON, yet
        for check, what in ((ready, "scraping, rules evaluated"), (scraped_thrice, "3 scrapes")):
            asyncio.run(eventually(running(check), timeout_s=60, what=what, ignoring=not_yet))

        assert [(r["name"], r.get("lastError")) for r in rules() if r["health"] != "ok"] == []
        dashboard = json.loads(DASHBOARD.read_text())
        for expr in exprs_in(dashboard):
            if expr.startswith("label_values("):
                continue  # Grafana's own variable query, not PromQL
            assert query(grafana_to_promql(expr)), f"no data for dashboard query {expr!r}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


# --- every metric the dashboard and the rules use exists ----------------------------------


def registered_metric_names() -> set[str]:
    """Family names of everything registered (counters without _total, as the client keeps them)."""
    return {family.name for family in REGISTRY.collect()}


def metric_names_in(expr: str) -> set[str]:
    names = set(re.findall(r"\brecorder_[a-zA-Z0-9_]+", expr))
    return {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in names}


def strings_in(node: Any, keys: tuple[str, ...]) -> Iterator[str]:
    """Every string under one of `keys`, anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from strings_in(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item, keys)


def exprs_in(node: Any) -> Iterator[str]:
    """PromQL of a dashboard's panels and variables."""
    return strings_in(node, ("expr", "query"))


def sql_queries_in(node: Any) -> Iterator[str]:
    """SQL of a dashboard's PostgreSQL panels."""
    return strings_in(node, ("rawSql",))


def test_design_metrics_are_registered() -> None:
    assert registered_metric_names() >= PROMISED_METRICS


def test_dashboard_uses_only_registered_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = list(exprs_in(dashboard))
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert len(exprs) >= 10
    assert used, "the dashboard queries no recorder metric"
    assert used <= registered_metric_names(), sorted(used - registered_metric_names())


def test_alert_rules_use_only_registered_metrics() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert used <= registered_metric_names(), sorted(used - registered_metric_names())


def test_every_alert_is_unit_tested_and_documented() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert alerts == tested
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert [a for a in sorted(alerts) if f"`{a}`" not in operations] == []


def test_every_metric_is_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    missing = [
        name
        for name in sorted(registered_metric_names())
        if name.startswith("recorder_") and f"`{name}" not in operations
    ]
    assert missing == []


# --- systemd -------------------------------------------------------------------------------


def test_systemd_unit_verifies_cleanly() -> None:
    if not shutil.which("systemd-analyze"):
        unavailable("systemd-analyze is not installed")
    # ExecStart is /bin/sh (it hands the DSN credential over), so verify's check that the
    # binary exists passes without the recorder installed in /opt.
    result = run("systemd-analyze", "verify", DEPLOY / "systemd" / "recorder.service")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_systemd_unit_is_hardened() -> None:
    unit = (DEPLOY / "systemd" / "recorder.service").read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=recorder",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "LoadCredential=dsn:",
    ):
        assert re.search(rf"^{re.escape(setting)}", unit, re.MULTILINE), setting


# --- compose and Dockerfile ----------------------------------------------------------------


def test_compose_file_follows_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = run(checker, "--builtin-schema", "vendor.compose-spec", ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_keeps_secrets_out() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert set(services) >= {"db", "recorder", "prometheus", "grafana"}
    db = services["db"]
    assert re.match(r"timescale/timescaledb:.*-pg17$", db["image"])
    # The image's init phase runs a socket-only server: healthy means TCP works.
    assert "-h 127.0.0.1" in " ".join(db["healthcheck"]["test"])
    assert services["recorder"]["depends_on"]["db"]["condition"] == "service_healthy"
    # Every password is a ${VARIABLE} from the env file, never a literal.
    for line in text.splitlines():
        if re.search(r"(?i)password", line) and ":" in line and not line.lstrip().startswith("#"):
            value = line.split(":", 1)[1]
            assert "${" in value or "_FILE" in line or not value.strip(), line
    example = (DEPLOY / "env.example").read_text()
    # Interpolated by compose (not $${...}, which the container's shell expands), outside comments.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for variable in set(re.findall(r"(?<!\$)\$\{(\w+)", code)):
        assert re.search(rf"^#?\s*{variable}=", example, re.MULTILINE), variable


def test_dockerfile_runs_as_non_root_without_secrets() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users, "no USER instruction: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert not re.search(r"(?im)^(ENV|ARG)\s+\S*(PASSWORD|SECRET|DSN|API_KEY)", dockerfile)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored
    assert ".venv" in ignored
    assert "**/*.so" in ignored  # a checkout's own build of the C encoder is not the image's


def test_the_image_builds_the_c_encoder_from_what_it_copies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    build_stage = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1]
    copied = " ".join(re.findall(r"^COPY\s+(.+)$", build_stage, re.MULTILINE)).split()
    assert "hatch_build.py" in copied  # the wheel hook pyproject.toml names
    assert "recorder" in copied  # recorder/storage/_numeric.c with it
    assert re.search(r"apt-get install[^\n]*\bgcc\b", build_stage)


# --- the database roles of the compose deployment ------------------------------------------


@pytest.fixture(scope="module")
def fresh_cluster() -> Iterator[dict[str, str]]:
    """A PostgreSQL cluster of its own (roles are cluster-wide), as the image's first start.

    Like the TimescaleDB image's entrypoint, it has the superuser `postgres` and the database
    `market` before the init script runs. Plain PostgreSQL: the script and the migrations
    must work on it too, and TimescaleDB only adds objects owned by the same role.
    """
    import tempfile

    import pgserver
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    data_dir = Path(tempfile.mkdtemp(prefix="recorder-test-roles-"))
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        params = conninfo_to_dict(server.get_uri())
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE market")
        yield {key: str(value) for key, value in params.items()}
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_init_script_roles_migrate_write_and_read_only(fresh_cluster: dict[str, str]) -> None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    from recorder.storage.migrate import migrate

    psql = shutil.which("psql")
    if psql is None:
        import pgserver

        psql = str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql")
    env = {
        "PATH": f"{Path(psql).parent}:{os.environ.get('PATH', '')}",
        "PGHOST": fresh_cluster.get("host", ""),
        "PGPORT": fresh_cluster.get("port", "5432"),
        "POSTGRES_USER": fresh_cluster.get("user", "postgres"),
        "POSTGRES_DB": "market",
        "RECORDER_DB_PASSWORD": "recpw",
        "GRAFANA_DB_PASSWORD": "grafpw",
    }
    script = DEPLOY / "postgres" / "initdb" / "10-roles.sh"
    result = subprocess.run(
        ["/bin/sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

    base = make_conninfo("", **fresh_cluster)
    as_recorder = make_conninfo(base, dbname="market", user="recorder", password="recpw")
    as_grafana = make_conninfo(base, dbname="market", user="grafana_reader", password="grafpw")
    # `recorder run` migrates as the database owner, without superuser rights...
    assert migrate(as_recorder)
    with psycopg.connect(as_recorder) as conn:
        assert conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False,)
        # ...and writes as recorder_writer, as the writer does.
        conn.execute("SET ROLE recorder_writer")
        conn.execute(
            "INSERT INTO currencies (short_name, sign, first_seen_at, updated_at)"
            " VALUES ('BTC', 'B', now(), now())"
        )
    with psycopg.connect(as_grafana) as conn:
        assert conn.execute("SELECT short_name FROM currencies").fetchall() == [("BTC",)]
        # The dashboard's SQL panels run as this role, with Grafana's macros filled in.
        for panel_sql in sql_queries_in(json.loads(DASHBOARD.read_text())):
            filled = panel_sql.replace("$__timeFilter(ts)", "ts > now() - interval '6 hours'")
            conn.execute(filled).fetchall()
    with psycopg.connect(as_grafana) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM currencies")
    with psycopg.connect(as_grafana, autocommit=True) as conn:
        # Even outside a read-only transaction it has no right to write.
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM currencies")


def test_grafana_provisioning_matches_compose_and_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in compose["services"]["grafana"]["volumes"]
        if volume.startswith("./")
    }
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "recorder.yml").read_text())
    dashboards_path = providers["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == "./deploy/grafana/dashboards"
    datasources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())
    uids = {ds["uid"]: ds for ds in datasources["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())

    def datasource_uids(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                yield node["datasource"]["uid"]
            for value in node.values():
                yield from datasource_uids(value)
        elif isinstance(node, list):
            for item in node:
                yield from datasource_uids(item)

    assert set(datasource_uids(dashboard)) <= set(uids)
    # The SQL data source logs in as the read-only role the init script creates.
    market = uids["market"]
    assert market["user"] == "grafana_reader"
    init = (DEPLOY / "postgres" / "initdb" / "10-roles.sh").read_text()
    assert "CREATE ROLE grafana_reader LOGIN" in init
    assert "IN ROLE recorder_research" in init
    # Every ${VAR} Grafana's provisioning reads is in Grafana's environment.
    text = (provisioning / "datasources" / "datasources.yml").read_text()
    environment = compose["services"]["grafana"]["environment"]
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= set(environment)


def test_prometheus_scrapes_the_compose_recorder() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    listen = compose["services"]["recorder"]["environment"]["RECORDER_METRICS__LISTEN"]
    assert target == "recorder:" + listen.rsplit(":", 1)[1]
    assert job["job_name"] == "recorder"  # RecorderDown selects up{job="recorder"}


# --- a recording daemon's own scrape ----------------------------------------------------------


def scrape_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_a_recording_daemons_scrape_passes_promtool_and_agrees_with_the_database(
    promtool: Path, pg_server_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon records the simulator; its /metrics passes promtool, and its counters
    say exactly what reached the database."""
    from recorder.daemon import Daemon
    from recorder.sim.server import SimSettings, run_sim
    from tests.harness.daemon import (
        daemon_config,
        events_received,
        logged_metrics_url,
        start_daemon,
        stop_daemon,
    )
    from tests.harness.deliveries import delivered_keys
    from tests.harness.metrics import sample
    from tests.harness.postgres import count_rows, fresh_database, query
    from tests.harness.waiting import eventually

    caplog.set_level(logging.INFO, logger="recorder.daemon")
    tables = ("trades", "book_events", "book_fills", "book_snapshots", "candles")
    with fresh_database(pg_server_dsn, "live_scrape") as dsn:
        settings = SimSettings(seed=9, pairs=("BTC_USD",), rate_per_s=30, history_hours=0.2,
                               record_deliveries=True)  # fmt: skip
        async with run_sim(settings) as sim:
            before = {t: sample("recorder_rows_written_total", table=t) for t in tables}
            received_before = events_received()
            btc_before = sum(
                sample("recorder_socket_events_total", pair="BTC_USD", kind=k)
                for k in ("new", "cancel")
            )
            daemon = Daemon(daemon_config(tmp_path, sim, dsn))
            running = await start_daemon(daemon)
            await eventually(lambda: count_rows(dsn, "book_events") > 30, what="events")
            sim.pause()
            await sim.drained()
            total = len(sim.engine.trades)
            await eventually(lambda: count_rows(dsn, "trades") == total, what="the whole tape")
            sent = partial(delivered_keys, sim)
            await eventually(lambda: events_received() - received_before >= len(sent()),
                             what="every event sent received")  # fmt: skip
            assert daemon.writer is not None
            assert await daemon.writer.flush(30)

            def disagreements(text: str) -> list[str]:
                """The tables whose rows the scrape does not count as stored."""
                wrong = []
                for table in tables:
                    stored = query(dsn, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608
                    written = scrape_value(text, "recorder_rows_written_total", table=table)
                    written -= before[table]
                    # candles are upserted: a candle updated while open counts again
                    agree = written >= stored > 0 if table == "candles" else written == stored
                    if not agree:
                        wrong.append(f"{table}: {written} written, {stored} stored")
                return wrong

            async def agreeing_scrape() -> str | None:
                # The snapshot ticker goes on while the flow is paused, so a snapshot can be
                # stored between a scrape and the count: scrape until both say the same.
                async with httpx.AsyncClient() as http:
                    text = (await http.get(logged_metrics_url(caplog.records))).text
                return None if disagreements(text) else text

            text = await eventually(agreeing_scrape, what="the scrape counts every stored row")
            await stop_daemon(daemon, running)

        checked = run(promtool, "check", "metrics", stdin=text.encode())
        assert checked.returncode == 0, checked.stdout + checked.stderr
        received = sum(
            scrape_value(text, "recorder_socket_events_total", pair="BTC_USD", kind=k)
            for k in ("new", "cancel")
        )
        assert received - btc_before == count_rows(dsn, "book_events")
        assert scrape_value(text, "recorder_db_up") == 1
        assert scrape_value(text, "recorder_socket_connected") == 1
