"""Private-method authentication, checked as we read the exchange's API docs.

A request carries `X-KEY`, `X-SIGN` and `X-NONCE`. The signature is the hex HMAC-SHA256,
keyed with the account's secret, of `key + urlencode(sorted(payload.items()))`, where the
payload is the request's form or JSON body (`{}` for a GET). Values may be encoded as the
docs' Python does (`urlencode`: a space is `+`) or as their JavaScript does
(`encodeURIComponent`: a space is `%20`); both are accepted, unless the simulator is told to
accept only one (`recorder sim --sign-encoding python|js`), as the real exchange may. The
nonce is an integer that must be greater than the last one this key used.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import quote, urlencode

SignEncoding = Literal["python", "js"]
"""Which of the docs' two samples' url-encodings a signature was made with."""
SIGN_ENCODINGS: tuple[SignEncoding, ...] = get_args(SignEncoding)

_JS_SAFE = "-_.!~*'()"
"""What JavaScript's encodeURIComponent leaves as it is (besides letters and digits)."""


class AuthError(Exception):
    """The request is not authenticated (HTTP 401); the message says why."""


@dataclass
class Credentials:
    key: str
    secret: str
    last_nonce: int = field(default=0, repr=False)
    sign_encoding: SignEncoding | None = None
    """The only encoding whose signatures are accepted; None: either."""

    def __repr__(self) -> str:
        return f"Credentials(key={self.key!r}, secret='****')"


def signing_messages(
    key: str, payload: Mapping[str, str], encoding: SignEncoding | None = None
) -> set[str]:
    """The strings a client may have signed for `payload`: in `encoding`, or either (None)."""
    items = sorted(payload.items())
    messages: dict[SignEncoding, str] = {
        "python": key + urlencode(items),
        "js": key + "&".join(f"{k}={quote(v, safe=_JS_SAFE)}" for k, v in items),
    }
    return set(messages.values()) if encoding is None else {messages[encoding]}


def sign(key: str, secret: str, payload: Mapping[str, str]) -> str:
    """The signature a client sends (the docs' Python recipe)."""
    message = key + urlencode(sorted(payload.items()))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify(
    credentials: Credentials, signature: str, nonce_text: str, payload: Mapping[str, str]
) -> None:
    """Raise `AuthError` unless `signature` and `nonce_text` are right; then record the nonce."""
    expected = [
        hmac.new(credentials.secret.encode(), m.encode(), hashlib.sha256).hexdigest()
        for m in signing_messages(credentials.key, payload, credentials.sign_encoding)
    ]
    if not any(hmac.compare_digest(e, signature.lower()) for e in expected):
        raise AuthError("invalid signature")
    try:
        nonce = int(nonce_text)
    except ValueError:
        raise AuthError("X-NONCE must be an integer") from None
    if nonce <= credentials.last_nonce:
        raise AuthError(f"nonce must be greater than {credentials.last_nonce}")
    credentials.last_nonce = nonce
