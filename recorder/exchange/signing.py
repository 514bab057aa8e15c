"""Headers for the private methods: the docs' HMAC signature and a nonce that only grows.

`X-SIGN = hex(HMAC-SHA256(secret, key + serialize(payload)))`, where `serialize` sorts the
payload by key and joins `key=value` pairs with `&`, each value url-encoded. The docs' two
samples url-encode differently, and the docs do not say which one the exchange checks:

- `js` (the default), their JavaScript: `encodeURIComponent(value)`, keys as they are; a
  space is `%20`, and `!*'()~` stay as they are;
- `python`, their Python: `urlencode(sorted(payload.items()))`, keys encoded too; a space is
  `+`, and `!*'()` become `%21%2A%27%28%29`.

They agree on every payload made of letters, digits and `-_.` (all the recorder's own
calls: order fields, ids, and `{}` for a GET), so the difference only shows on other
characters; `recorder probe` finds out which one the exchange accepts.

The nonce must exceed the previous call's, also the previous run's. It is the time in
milliseconds, as in the docs' samples, or the last nonce + 1 when the clock has not moved
on (or went back); the last one is written to a file before it is used, atomically, so a
restart (or a crash right after a call) continues above it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import quote, urlencode

NONCE_FILE = "exchange-nonce"
_URI_COMPONENT_SAFE = "-_.!~*'()"  # what JavaScript's encodeURIComponent leaves as it is

PayloadValue = str | int | Decimal
SignEncoding = Literal["js", "python"]
"""How payload values are url-encoded before signing: the docs' JavaScript or Python sample."""
SIGN_ENCODINGS: tuple[SignEncoding, ...] = get_args(SignEncoding)
DEFAULT_SIGN_ENCODING: SignEncoding = "js"


def payload_text(value: PayloadValue) -> str:
    """A payload value as sent and signed; a Decimal in plain notation (`0.00000001`)."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a payload value")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def serialize_payload(
    payload: Mapping[str, PayloadValue], encoding: SignEncoding = DEFAULT_SIGN_ENCODING
) -> str:
    """The payload as signed: sorted by key, url-encoded as `encoding`'s sample does."""
    items = [(key, payload_text(payload[key])) for key in sorted(payload)]
    if encoding == "js":  # the docs' serializePayload
        return "&".join(f"{k}={quote(v, safe=_URI_COMPONENT_SAFE)}" for k, v in items)
    if encoding == "python":  # the docs' get_auth_headers
        return urlencode(items)
    raise ValueError(f"not a signing encoding ({', '.join(SIGN_ENCODINGS)}): {encoding!r}")


def sign(
    key: str,
    secret: str,
    payload: Mapping[str, PayloadValue],
    encoding: SignEncoding = DEFAULT_SIGN_ENCODING,
) -> str:
    """Hex HMAC-SHA256 with `secret` as key over `key + serialize_payload(payload, encoding)`."""
    message = key + serialize_payload(payload, encoding)
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class NonceSource:
    """Strictly increasing integers, also across restarts when given a directory to keep state.

    Without a directory the nonce only grows within this process (tests, one-off tools).
    """

    def __init__(
        self, state_dir: Path | None = None, *, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self._path = state_dir / NONCE_FILE if state_dir is not None else None
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last = self._read()

    def _read(self) -> int:
        if self._path is None or not self._path.exists():
            return 0
        text = self._path.read_text().strip()
        try:
            return int(text)
        except ValueError:
            # A damaged file must not let the nonce go back: the clock alone is what is left.
            return 0

    def next(self) -> int:
        with self._lock:
            nonce = max(self._clock_ms(), self._last + 1)
            self._write(nonce)
            self._last = nonce
            return nonce

    def _write(self, nonce: int) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=NONCE_FILE + ".")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{nonce}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def auth_headers(
    key: str,
    secret: str,
    payload: Mapping[str, PayloadValue],
    nonce: int,
    encoding: SignEncoding = DEFAULT_SIGN_ENCODING,
) -> dict[str, str]:
    return {"X-KEY": key, "X-SIGN": sign(key, secret, payload, encoding), "X-NONCE": str(nonce)}
