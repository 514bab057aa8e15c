"""The configuration: TOML file, environment overrides, validation, secrets kept out of sight."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder import exitcodes
from recorder.cli import main
from recorder.config import (
    CANDLE_TYPES,
    CANDLE_WIDTH_S,
    Config,
    ConfigError,
    Dsn,
    TradesBackfill,
    load_config,
    mask_dsn,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"

API_KEY = "key-6f1d2a9c"
API_SECRET = "secret-b4e7c2d8a1"
DB_PASSWORD = "pw-hunter2-Xq"
SECRETS = (API_KEY, API_SECRET, DB_PASSWORD)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RECORDER_<SECTION>__<KEY> variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("RECORDER_") and "__" in name:
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.problems


# --- reading ------------------------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None)
    assert config.exchange.base_url == "https://bitexbit.com"
    assert config.exchange.socket_url == "https://bitexbit.com"
    assert config.exchange.socketio_protocol == "auto"
    assert config.database.embedded
    assert config.recorder.data_dir == Path("./var")
    assert config.recorder.pairs == ("*",)
    assert config.recorder.all_pairs
    assert config.recorder.snapshot_interval_s == 60
    assert config.recorder.trades_poll_interval_s == 2
    assert config.recorder.candles_poll_interval_s == 30
    assert config.recorder.candle_types == ("1", "5", "15", "30", "60", "240", "D")
    assert config.recorder.trades_backfill == TradesBackfill("all", None)
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9108)
    assert not config.exchange.private_enabled


def test_every_key_from_a_file(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            f"""
            [exchange]
            base_url = "http://127.0.0.1:8080/"
            socket_url = "ws://127.0.0.1:8081/"
            socket_path = "/ws/"
            socketio_protocol = "2"
            subscribe_event = "join"
            request_timeout_s = 2.5
            api_key = "{API_KEY}"
            api_secret = "{API_SECRET}"
            [database]
            dsn = "postgresql://rec:{DB_PASSWORD}@db.example:5433/market"
            [recorder]
            data_dir = "/srv/recorder"
            pairs = ["BTC_USD", "ETH_BTC"]
            snapshot_interval_s = 15
            trades_poll_interval_s = 0.5
            candles_poll_interval_s = 10
            candle_types = ["1", "D"]
            trades_backfill = "1d12h"
            [metrics]
            listen = "[::]:9200"
            [logging]
            level = "debug"
            format = "json"
            """,
        )
    )
    assert config.exchange.base_url == "http://127.0.0.1:8080"  # trailing slash dropped
    assert config.exchange.socket_url == "ws://127.0.0.1:8081"
    assert config.exchange.socket_path == "/ws/"
    assert config.exchange.socketio_protocol == "2"
    assert config.exchange.request_timeout_s == 2.5
    assert config.exchange.api_key is not None
    assert config.exchange.api_key.get_secret_value() == API_KEY
    assert config.exchange.private_enabled
    assert config.database.dsn.get_secret_value().endswith("@db.example:5433/market")
    assert config.database.dsn.password() == DB_PASSWORD
    assert not config.database.embedded
    assert config.recorder.data_dir == Path("/srv/recorder")
    assert config.recorder.pairs == ("BTC_USD", "ETH_BTC")
    assert not config.recorder.all_pairs
    assert config.recorder.trades_poll_interval_s == 0.5
    assert config.recorder.candle_types == ("1", "D")
    assert config.recorder.trades_backfill.window_s == 36 * 3600
    assert (config.metrics.host, config.metrics.port) == ("::", 9200)
    assert config.logging.level == "debug"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("wss://bitexbit.com", "wss://bitexbit.com"),  # the docs' own address
        ("ws://127.0.0.1:8081/", "ws://127.0.0.1:8081"),
        ("https://bitexbit.com/", "https://bitexbit.com"),
        ("http://[::1]:8081", "http://[::1]:8081"),
    ],
)
def test_socket_url_takes_websocket_and_http_schemes(
    tmp_path: Path, written: str, expected: str
) -> None:
    config = load_config(write(tmp_path, f'[exchange]\nsocket_url = "{written}"'))
    assert config.exchange.socket_url == expected


@pytest.mark.parametrize(("written", "expected"), [('"auto"', "auto"), ("2", "2"), ('"4"', "4")])
def test_socketio_protocol_is_a_name_also_when_written_as_a_number(
    tmp_path: Path, written: str, expected: str
) -> None:
    config = load_config(write(tmp_path, f"[exchange]\nsocketio_protocol = {written}"))
    assert config.exchange.socketio_protocol == expected


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("exchange", "base_url", "http://sim:8000", "http://sim:8000"),
        ("exchange", "socket_url", "http://sim:8001", "http://sim:8001"),
        ("exchange", "socket_url", "wss://bitexbit.com", "wss://bitexbit.com"),
        ("exchange", "socketio_protocol", "4", "4"),
        ("exchange", "request_timeout_s", "3", 3.0),
        ("database", "dsn", "host=db dbname=x", Dsn("host=db dbname=x")),
        ("recorder", "data_dir", "/data", Path("/data")),
        ("recorder", "pairs", "BTC_USD,ETH_USD", ("BTC_USD", "ETH_USD")),
        ("recorder", "pairs", '["BTC_USD","ETH_USD"]', ("BTC_USD", "ETH_USD")),
        ("recorder", "snapshot_interval_s", "5", 5.0),
        ("recorder", "trades_poll_interval_s", "1", 1.0),
        ("recorder", "candles_poll_interval_s", "9", 9.0),
        ("recorder", "candle_types", "1,60", ("1", "60")),
        ("recorder", "trades_backfill", "7d", TradesBackfill("7d", 7 * 86400.0)),
        ("metrics", "listen", "0.0.0.0:9300", "0.0.0.0:9300"),
        ("logging", "level", "warning", "warning"),
    ],
)
def test_environment_overrides_the_file_key_by_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: str,
    key: str,
    value: str,
    expected: object,
) -> None:
    path = write(tmp_path, '[recorder]\npairs = ["LTC_USD"]\nsnapshot_interval_s = 42\n')
    before = load_config(path)
    monkeypatch.setenv(f"RECORDER_{section.upper()}__{key.upper()}", value)
    after = load_config(path)
    assert getattr(getattr(after, section), key) == expected
    assert getattr(getattr(after, section), key) != getattr(getattr(before, section), key)
    # Only that key changed: the file's other values survive the override.
    if (section, key) != ("recorder", "pairs"):
        assert after.recorder.pairs == ("LTC_USD",)
    if (section, key) != ("recorder", "snapshot_interval_s"):
        assert after.recorder.snapshot_interval_s == 42


def test_environment_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("recorder_recorder__snapshot_interval_s", "7")
    assert load_config(None).recorder.snapshot_interval_s == 7


def test_the_example_file_holds_every_key_and_is_valid() -> None:
    text = EXAMPLE.read_text()
    example = tomllib.loads(text)
    config = load_config(EXAMPLE)
    assert config == load_config(None), "the example shows the defaults"
    for section, model in Config.model_fields.items():
        assert model.annotation is not None
        for key in model.annotation.model_fields:
            # Secret keys are present but commented out: they must not be set by copying.
            assert key in example.get(section, {}) or f"# {key} = " in text, f"[{section}] {key}"


def test_frozen() -> None:
    config = load_config(None)
    with pytest.raises(ValueError, match="frozen"):
        config.recorder.snapshot_interval_s = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", None),
        ("none", 0.0),
        ("90m", 5400.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1d12h", 129600.0),
        ("1.5h", 5400.0),
        (" 7D ", 604800.0),
    ],
)
def test_trades_backfill_parses(text: str, expected: float | None) -> None:
    assert TradesBackfill.parse(text).window_s == expected


@pytest.mark.parametrize("text", ["", "7", "7x", "d7", "7d junk", "-1d", "0d", "forever"])
def test_trades_backfill_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        TradesBackfill.parse(text)


def test_every_candle_type_has_its_width() -> None:
    assert tuple(CANDLE_WIDTH_S) == CANDLE_TYPES
    minutes = [CANDLE_WIDTH_S[t] // 60 for t in CANDLE_TYPES if t != "D"]
    assert [str(m) for m in minutes] == [t for t in CANDLE_TYPES if t != "D"]
    assert CANDLE_WIDTH_S["D"] == 24 * 3600


# --- every bad-value path ends in one line naming the key, and exit code 2 -----------------


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('[exchange]\nbase_url = "ftp://x"', "exchange.base_url"),
        ('[exchange]\nbase_url = "https://x/?a=1"', "exchange.base_url"),
        ("[exchange]\nsocket_url = 5", "exchange.socket_url"),
        ('[exchange]\nsocket_url = "ftp://x"', "exchange.socket_url"),
        ('[exchange]\nsocket_url = "wss://"', "exchange.socket_url"),
        ('[exchange]\nsocket_url = "wss://x/?EIO=3"', "exchange.socket_url"),
        ('[exchange]\nsocket_url = "wss://x/socket.io"', "exchange.socket_url"),
        ('[exchange]\nbase_url = "wss://x"', "exchange.base_url"),
        ('[exchange]\nsocketio_protocol = "3"', "exchange.socketio_protocol"),
        ('[exchange]\nsocketio_protocol = "v4"', "exchange.socketio_protocol"),
        ("[exchange]\nsocketio_protocol = true", "exchange.socketio_protocol"),
        ("[exchange]\nrequest_timeout_s = 0", "exchange.request_timeout_s"),
        ('[exchange]\napi_key = "abc"', "exchange"),  # a key without its secret
        ("[database]\ndsn = 5", "database.dsn"),
        ('[database]\ndsn = "host=x port"', "database.dsn"),
        ("[recorder]\ndata_dir = 3", "recorder.data_dir"),
        ("[recorder]\npairs = 5", "recorder.pairs"),
        ("[recorder]\npairs = []", "recorder"),
        ('[recorder]\npairs = ["*", "BTC_USD"]', "recorder"),
        ('[recorder]\npairs = ["BTC_USD", "BTC_USD"]', "recorder"),
        ('[recorder]\npairs = ["BTC-USD"]', "recorder.pairs[0]"),
        ('[recorder]\npairs = ["BTC_USD\\n"]', "recorder.pairs[0]"),  # a name, then a newline
        ("[recorder]\nsnapshot_interval_s = -1", "recorder.snapshot_interval_s"),
        ('[recorder]\nsnapshot_interval_s = "sixty"', "recorder.snapshot_interval_s"),
        ("[recorder]\nsnapshot_interval_s = true", "recorder.snapshot_interval_s"),
        ("[recorder]\nsnapshot_interval_s = nan", "recorder.snapshot_interval_s"),
        ("[recorder]\ntrades_poll_interval_s = 0", "recorder.trades_poll_interval_s"),
        ("[recorder]\ncandles_poll_interval_s = [1]", "recorder.candles_poll_interval_s"),
        ('[recorder]\ncandle_types = ["1", "2"]', "recorder.candle_types[1]"),
        ("[recorder]\ncandle_types = []", "recorder"),
        ('[recorder]\ntrades_backfill = "7x"', "recorder.trades_backfill"),
        ("[recorder]\ntrades_backfill = 7", "recorder.trades_backfill"),
        ('[metrics]\nlisten = "nope"', "metrics.listen"),
        ('[metrics]\nlisten = "127.0.0.1:99999"', "metrics.listen"),
        ('[logging]\nlevel = "loud"', "logging.level"),
        ('[logging]\nformat = "xml"', "logging.format"),
        ("[recorder]\nsnapshot_interval = 60", "recorder.snapshot_interval: unknown key"),
        ("[exchanges]\nbase_url = 'https://x'", "exchanges: unknown key"),
        ("recorder = 5", "recorder"),
    ],
)
def test_bad_file_values_name_the_key_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, names: str
) -> None:
    problems = problems_of(tmp_path, toml)
    assert len(problems) == 1, problems
    assert problems[0].startswith(names), problems[0]
    assert str(tmp_path / "config.toml") in problems[0]
    assert "\n" not in problems[0]
    assert main(["config", "--config", str(tmp_path / "config.toml")]) == exitcodes.BAD_CONFIG
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"recorder: configuration: {problems[0]}\n")


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("RECORDER_RECORDER__SNAPSHOT_INTERVAL_S", "abc", "recorder.snapshot_interval_s"),
        ("RECORDER_RECORDER__PAIRS", '["BTC_USD",', "recorder.pairs"),
        ("RECORDER_RECORDER__PAIRS", "BTC/USD", "recorder.pairs[0]"),
        ("RECORDER_METRICS__LISTEN", "9108", "metrics.listen"),
        ("RECORDER_EXCHANGE__SOCKETIO_PROTOCOL", "1", "exchange.socketio_protocol"),
        ("RECORDER_EXCHANGE__SOCKET_URL", "tcp://x", "exchange.socket_url"),
        ("RECORDER_RECORDER__NOPE", "1", "recorder.nope: unknown key"),
        ("RECORDER_DATABSE__DSN", "host=x", "RECORDER_DATABSE__DSN: unknown section"),
    ],
)
def test_bad_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, names: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_config(None)
    (problem,) = caught.value.problems
    assert problem.startswith(names)
    assert variable in problem


def test_variables_without_a_section_are_not_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_TEST_DSN", "host=elsewhere")  # the test suite's own variable
    assert load_config(None).database.embedded


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[recorder]\nsnapshot_interval_s = 0\n[metrics]\nlisten = "x"')
    assert [p.split(":")[0] for p in problems] == ["recorder.snapshot_interval_s", "metrics.listen"]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[recorder\n"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RECORDER_")}
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=60,
        check=False,
    )


def test_bad_configuration_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[recorder]\nsnapshot_interval_s = -5\n")
    result = run_cli("config", "--config", str(path))
    assert result.returncode == exitcodes.BAD_CONFIG == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("recorder: configuration: recorder.snapshot_interval_s:")
    assert "greater than 0" in line


def test_bad_environment_exits_2() -> None:
    result = run_cli("config", env={"RECORDER_RECORDER__TRADES_BACKFILL": "forever"})
    assert result.returncode == 2
    assert "RECORDER_RECORDER__TRADES_BACKFILL" in result.stderr


def test_bad_arguments_exit_2() -> None:
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("config", "--no-such-flag").returncode == 2


# --- secrets -------------------------------------------------------------------------------


def secret_config(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        f"""
        [exchange]
        api_key = "{API_KEY}"
        api_secret = "{API_SECRET}"
        [database]
        dsn = "postgresql://rec:{DB_PASSWORD}@db:5432/market"
        """,
    )


def test_secrets_are_absent_from_repr_str_and_dumps(tmp_path: Path) -> None:
    config = load_config(secret_config(tmp_path))
    for text in (
        repr(config),
        str(config),
        repr(config.exchange),
        repr(config.database),
        str(config.database.dsn),
        config.model_dump_json(),
        str(config.model_dump()),
        str(config.model_dump(mode="json")),
    ):
        for secret in SECRETS:
            assert secret not in text
    # ... and what is not secret stays readable.
    assert "rec:****@db:5432/market" in repr(config.database)
    assert sorted(config.secrets()) == sorted([API_KEY, API_SECRET, DB_PASSWORD, DB_PASSWORD])


def test_recorder_config_prints_effective_values_secrets_masked(tmp_path: Path) -> None:
    result = run_cli(
        "config",
        "--config",
        str(secret_config(tmp_path)),
        env={"RECORDER_RECORDER__PAIRS": "BTC_USD,ETH_USD", "RECORDER_LOGGING__LEVEL": "debug"},
    )
    assert result.returncode == 0, result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    printed = tomllib.loads(result.stdout)  # the output is itself valid TOML
    assert printed["recorder"]["pairs"] == ["BTC_USD", "ETH_USD"]
    assert printed["recorder"]["candle_types"] == list(CANDLE_TYPES)
    assert printed["database"]["dsn"] == "postgresql://rec:****@db:5432/market"
    assert printed["exchange"]["api_key"] == "**********"


def test_secrets_are_absent_from_errors(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        f"""
        [exchange]
        api_key = ["{API_KEY}"]
        api_secret = 7
        [database]
        dsn = "host=db password={DB_PASSWORD} port"
        """,
    )
    result = run_cli("config", "--config", str(bad))
    assert result.returncode == 2
    assert "database.dsn" in result.stderr
    assert "exchange.api_key" in result.stderr
    for secret in SECRETS:
        assert secret not in result.stderr + result.stdout


def test_the_cli_masks_configured_secrets_in_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["config", "--config", str(secret_config(tmp_path))]) == 0
        capsys.readouterr()
        logging.getLogger("recorder.anything").error(
            "GET postgresql://rec:%s@db key=%s sign=%s", DB_PASSWORD, API_KEY, API_SECRET
        )
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "postgresql://rec:****@db key=**** sign=****" in err
    for secret in SECRETS:
        assert secret not in err


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("", ""),
        ("postgresql://rec:pw@db:5432/x", "postgresql://rec:****@db:5432/x"),
        ("postgresql://rec@db/x", "postgresql://rec@db/x"),
        ("postgres://db/x?user=rec&password=pw&sslmode=require", "postgres://db/x?user=rec&password=****&sslmode=require"),
        ("host=db password=pw user=rec", "host=db password=**** user=rec"),
        ("host=db password = 'p w\\'x' user=rec", "host=db password = **** user=rec"),
        ("host=db user=rec", "host=db user=rec"),
        ("host=db password='://x@y' user=rec", "host=db password=**** user=rec"),
    ],
)  # fmt: skip
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


@given(password=st.text(min_size=1, max_size=40).filter(lambda p: "\x00" not in p))
def test_no_password_survives_masking(password: str) -> None:
    encoded = quote(password, safe="")
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    assert mask_dsn(f"postgresql://rec:{encoded}@db:5432/x") == "postgresql://rec:****@db:5432/x"
    assert mask_dsn(f"postgresql://db/x?password={encoded}") == "postgresql://db/x?password=****"
    assert mask_dsn(f"host=db password={quoted} user=rec") == "host=db password=**** user=rec"


def test_a_whole_section_from_the_environment_must_be_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_RECORDER", '{"snapshot_interval_s": 5}')
    assert load_config(None).recorder.snapshot_interval_s == 5
    monkeypatch.setenv("RECORDER_RECORDER", "snapshot_interval_s=5")
    with pytest.raises(ConfigError, match='field "recorder"'):
        load_config(None)


def test_a_section_holding_secrets_is_never_echoed(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, f'exchange = "{API_SECRET}"')
    assert problem.startswith("exchange: ")
    assert API_SECRET not in problem
