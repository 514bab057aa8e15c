"""The recorder's configuration: a TOML file, overridden key by key from the environment.

`load_config` is the one place that reads the environment. It returns a frozen `Config`
whose values are validated and carry their units in their names (`*_s` are seconds).
Anything wrong (bad TOML, unknown key, wrong type, bad value) raises `ConfigError` with one
line per problem naming the key, where it came from and what is wrong; the CLI exits 2 on it.

Secrets (`exchange.api_key`, `exchange.api_secret`, the password inside `database.dsn`) are
`pydantic.Secret` values: their repr, str and dumps show a mask, and error messages never
quote them. `Config.secrets()` lists them so that logging can redact them everywhere.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeGuard, get_args
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg.conninfo
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Secret,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from recorder.exchange.ratelimit import PRIVATE_CALLS_PER_S, PUBLIC_CALLS_PER_S
from recorder.records import is_pair_name

ENV_PREFIX = "RECORDER_"
ENV_NESTED_DELIMITER = "__"
MASK = "****"

CandleType = Literal["1", "5", "15", "30", "60", "240", "D"]
"""A chart resolution the exchange serves: minutes, and D for a day."""
CANDLE_TYPES: tuple[CandleType, ...] = get_args(CandleType)
CANDLE_WIDTH_S: dict[CandleType, int] = {
    "1": 60,
    "5": 300,
    "15": 900,
    "30": 1800,
    "60": 3600,
    "240": 14400,
    "D": 86400,
}
"""How long one candle of each resolution lasts (a day starts at 00:00 UTC)."""


def is_candle_type(value: object) -> TypeGuard[CandleType]:
    return value in CANDLE_WIDTH_S


class ConfigError(Exception):
    """The configuration cannot be used; each entry of `problems` is one line for the user."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- value types ---------------------------------------------------------------------------


def _reject_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1; a boolean where a number belongs is a mistake.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _split_list(value: Any) -> Any:
    # Lists may be written as TOML/JSON lists or, handy in environment variables, as
    # comma-separated text: RECORDER_RECORDER__PAIRS=BTC_USD,ETH_USD.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a valid JSON list ({exc.msg})") from None
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


PositiveSeconds = Annotated[float, BeforeValidator(_reject_bool), Field(gt=0, allow_inf_nan=False)]
PositiveRate = PositiveSeconds
NonNegativeSeconds = Annotated[
    float, BeforeValidator(_reject_bool), Field(ge=0, allow_inf_nan=False)
]
"""Calls per second: the same constraints as a duration."""


def _check_pair(name: str) -> str:
    if name != "*" and not is_pair_name(name):
        raise ValueError("not a pair name like BTC_USD (or * for every pair)")
    return name


PairName = Annotated[str, AfterValidator(_check_pair)]


def _check_http_url(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("a root URL carries no query or fragment")
    return value.rstrip("/")


HttpUrl = Annotated[str, BeforeValidator(_check_http_url)]

SOCKET_SCHEMES = ("ws", "wss", "http", "https")


def _check_socket_url(value: Any) -> Any:
    # The docs write the stream's address as wss://bitexbit.com; socket.io clients take the
    # same server as http(s)://. Both name one endpoint, so both are accepted.
    if not isinstance(value, str):
        return value
    parts = urlsplit(value)
    if parts.scheme not in SOCKET_SCHEMES or not parts.hostname:
        raise ValueError("not a ws://, wss://, http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("a root URL carries no query or fragment")
    if parts.path.strip("/"):
        # socket.io clients use only the host of this URL; a path here would be ignored.
        raise ValueError("a root URL has no path; the socket.io path is exchange.socket_path")
    return value.rstrip("/")


SocketUrl = Annotated[str, BeforeValidator(_check_socket_url)]


def _protocol_text(value: Any) -> Any:
    # TOML invites `socketio_protocol = 2`; the generation is a name, so 2 means "2".
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


SocketIOProtocol = Annotated[Literal["auto", "2", "4"], BeforeValidator(_protocol_text)]
"""Which socket.io generation the exchange speaks: "2" for socket.io 1.x/2.x (Engine.IO v3),
"4" for socket.io 3.x/4.x (Engine.IO v4), "auto" to find out when connecting."""


DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class TradesBackfill:
    """How far back to fetch the trade tape for a pair the database holds no trades of."""

    text: str
    window_s: float | None
    """None: everything the exchange serves; 0: nothing; otherwise the last `window_s` seconds."""

    @classmethod
    def parse(cls, value: Any) -> TradesBackfill:
        if isinstance(value, TradesBackfill):
            return value
        if not isinstance(value, str):
            raise ValueError('expected "all", "none" or a duration like "7d"')
        text = value.strip().lower()
        if text == "all":
            return cls(text, None)
        if text == "none":
            return cls(text, 0.0)
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError('not "all", "none" or a duration like 90m, 12h, 7d, 2w or 1d12h')
        window_s = sum(float(n) * DURATION_UNITS_S[u] for n, u in parts)
        if window_s <= 0:
            raise ValueError('an empty duration; use "none" to skip backfill')
        return cls(text, window_s)


BackfillSetting = Annotated[
    TradesBackfill,
    NoDecode,
    BeforeValidator(TradesBackfill.parse),
    PlainSerializer(lambda b: b.text, return_type=str),
]


def mask_dsn(dsn: str) -> str:
    """The DSN with its password (if any) replaced by a mask; everything else as written."""
    # libpq's own rule: a URI starts with its scheme; anything else is key=value pairs,
    # whose quoted values may themselves contain "://".
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user, has_password, _ = userinfo.partition(":")
            netloc = f"{user}:{MASK}@{hostinfo}" if has_password else netloc
        query = re.sub(r"(?i)(^|&)(password=)[^&]*", rf"\1\2{MASK}", parts.query)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    return re.sub(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", rf"\1{MASK}", dsn)


class Dsn(Secret[str]):
    """A libpq connection string whose password never shows; empty means the embedded server."""

    def _display(self) -> str:
        return mask_dsn(self.get_secret_value())

    def password(self) -> str | None:
        value = self.get_secret_value()
        if not value:
            return None
        password = psycopg.conninfo.conninfo_to_dict(value).get("password")
        return str(password) if password else None


def _check_dsn(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        try:
            psycopg.conninfo.conninfo_to_dict(value)
        except psycopg.Error:
            # libpq's message may quote the string, password included: say it in our words.
            raise ValueError(
                "not a valid PostgreSQL connection string "
                "(postgresql://user:password@host:5432/dbname, or key=value pairs)"
            ) from None
    return value


def split_listen(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets) as (host, port); ValueError if it is not that."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not host:port, like 127.0.0.1:9108 or [::]:9108")
    return host, int(port)


def _check_listen(value: Any) -> Any:
    if isinstance(value, str):
        split_listen(value)
    return value


ListenAddress = Annotated[str, BeforeValidator(_check_listen)]


# --- sections ------------------------------------------------------------------------------


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExchangeConfig(Section):
    base_url: HttpUrl = "https://bitexbit.com"
    """REST root; endpoints live under /api/v1/ and /api/charts/."""
    socket_url: SocketUrl = "https://bitexbit.com"
    socket_path: str = "/socket.io/"
    socketio_protocol: SocketIOProtocol = "auto"
    """The exchange's socket.io generation; "auto" asks the server before the first connection."""
    subscribe_event: str = "subscribe"
    """The socket.io event that subscribes to a `book_<pair>` channel."""
    stream_connections: Annotated[int, BeforeValidator(_reject_bool), Field(ge=1, le=8)] = 2
    """Independent socket.io connections, each subscribed to every pair: while one
    reconnects the others still listen (socket.io cannot replay what was missed)."""
    stream_backoff_max_s: PositiveSeconds = 10.0
    """The longest wait between two attempts of one stream connection: an exchange that
    refuses every attempt sees one per connection per this many seconds."""
    stream_silence_s: NonNegativeSeconds = 60.0
    """A connection that delivers no event of a pair for this long while the pair's trade
    tape advances is resubscribed, then reconnected; 0 turns the watchdog off."""
    request_timeout_s: PositiveSeconds = 10.0
    public_calls_per_s: PositiveRate = PUBLIC_CALLS_PER_S
    """The client's pace of public REST calls; the exchange allows 100/s per IP."""
    private_calls_per_s: PositiveRate = PRIVATE_CALLS_PER_S
    """The client's pace of signed calls; the exchange allows 2/s per account."""
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _key_and_secret_together(self) -> Self:
        if (self.api_key is None) != (self.api_secret is None):
            raise ValueError("api_key and api_secret go together: set both or neither")
        return self

    @property
    def private_enabled(self) -> bool:
        return self.api_key is not None


class DatabaseConfig(Section):
    dsn: Annotated[Dsn, BeforeValidator(_check_dsn)] = Dsn("")
    """Empty: the recorder starts its own PostgreSQL under `recorder.data_dir`."""

    @property
    def embedded(self) -> bool:
        return not self.dsn.get_secret_value().strip()


class RecorderConfig(Section):
    data_dir: Path = Path("./var")
    pairs: Annotated[tuple[PairName, ...], NoDecode, BeforeValidator(_split_list)] = ("*",)
    snapshot_interval_s: PositiveSeconds = 60.0
    trades_poll_interval_s: PositiveSeconds = 2.0
    candles_poll_interval_s: PositiveSeconds = 30.0
    metadata_refresh_s: PositiveSeconds = 300.0
    candle_types: Annotated[
        tuple[CandleType, ...],
        NoDecode,
        BeforeValidator(_split_list),
    ] = CANDLE_TYPES
    trades_backfill: BackfillSetting = TradesBackfill("all", None)
    lease_ttl_s: Annotated[
        float, BeforeValidator(_reject_bool), Field(ge=1, le=600, allow_inf_nan=False)
    ] = 12.0
    """Recorders on one database share the pairs through leases of this length, renewed
    every third of it: one that dies, hangs or loses the database loses its pairs to the
    others within it (docs/operations.md, "Running several recorders")."""
    redundancy: Annotated[int, BeforeValidator(_reject_bool), Field(ge=1, le=16)] = 1
    """How many recorders record each pair at once (a hot standby with 2); the account is
    always fetched by one."""

    @model_validator(mode="after")
    def _lists_make_sense(self) -> Self:
        if not self.pairs:
            raise ValueError('pairs is empty: list pairs, or ["*"] for every pair')
        if "*" in self.pairs and len(self.pairs) > 1:
            raise ValueError('pairs: "*" already means every pair; list pairs or "*", not both')
        if not self.candle_types:
            raise ValueError(
                "candle_types is empty: list at least one of " + ", ".join(CANDLE_TYPES)
            )
        for name, values in (("pairs", self.pairs), ("candle_types", self.candle_types)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice")
        return self

    @property
    def all_pairs(self) -> bool:
        return self.pairs == ("*",)


class MetricsConfig(Section):
    listen: ListenAddress = "127.0.0.1:9108"

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"
    """auto: human-readable on a terminal, JSON lines otherwise."""


class Config(BaseSettings):
    """The whole configuration; built by `load_config`, never changed afterwards."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
    )

    exchange: ExchangeConfig = ExchangeConfig()
    database: DatabaseConfig = DatabaseConfig()
    recorder: RecorderConfig = RecorderConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them key by key.
        return (env_settings, init_settings)

    def secrets(self) -> list[str]:
        """Every secret value in this configuration, for log redaction."""
        found = [
            s.get_secret_value() for s in (self.exchange.api_key, self.exchange.api_secret) if s
        ]
        password = self.database.dsn.password()
        if password:
            found += [password, quote(password, safe="")]
        return [s for s in found if s]


SECRET_KEYS = {("exchange", "api_key"), ("exchange", "api_secret"), ("database", "dsn")}
SECTIONS_WITH_SECRETS = {section for section, _ in SECRET_KEYS}


def env_var_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}{ENV_NESTED_DELIMITER}{key.upper()}"


def load_config(path: Path | None = None) -> Config:
    """Read `path` (optional) and the RECORDER_<SECTION>__<KEY> variables into a `Config`."""
    file_values = _read_toml(path) if path is not None else {}
    problems = _unknown_env_sections(os.environ)
    try:
        config = Config(**file_values)
    except ValidationError as exc:
        source = str(path) if path is not None else "defaults"
        problems += [_describe(err, os.environ, source) for err in exc.errors(include_url=False)]
    except SettingsError as exc:
        # A whole section may come from one variable (RECORDER_RECORDER='{...}') as JSON;
        # pydantic-settings raises this when that is not JSON. Its message names the section.
        problems.append(f"environment: {exc}")
    if problems:
        raise ConfigError(problems)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such configuration file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def _unknown_env_sections(environ: Mapping[str, str]) -> list[str]:
    # pydantic-settings ignores variables for sections that do not exist; a typo such as
    # RECORDER_DATABSE__DSN would then be dropped silently, so we refuse it.
    sections = set(Config.model_fields)
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and ENV_NESTED_DELIMITER in upper:
            section = upper.removeprefix(ENV_PREFIX).split(ENV_NESTED_DELIMITER, 1)[0].lower()
            if section not in sections:
                problems.append(
                    f"{name}: unknown section {section!r} (known: {', '.join(sorted(sections))})"
                )
    return problems


def _describe(err: Any, environ: Mapping[str, str], file_source: str) -> str:
    loc = [str(part) for part in err["loc"]]
    section, key = [*loc, "", ""][:2]
    dotted = ".".join(p if not p.isdigit() else f"[{p}]" for p in loc).replace(".[", "[")
    env_name = env_var_name(section, key) if key else ""
    from_env = bool(env_name) and any(n.upper() == env_name for n in environ)
    where = env_name if from_env else file_source
    if err["type"] == "extra_forbidden":
        return f"{dotted}: unknown key (in {where})"
    message = str(err["msg"]).removeprefix("Value error, ")
    # Never echo what may be a secret: its key, or a whole section that holds one.
    secret = (section, key) in SECRET_KEYS or (not key and section in SECTIONS_WITH_SECRETS)
    shown = "" if secret else _short(err.get("input"))
    return f"{dotted}: {message}{shown} (in {where})"


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        return ""
    text = repr(value)
    return f", got {text[:60]}{'...' if len(text) > 60 else ''}"
