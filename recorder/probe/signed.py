"""With API keys: is a signed call accepted, and which url-encoding does the exchange check?

Two calls, made with the recorder's own client and nonce (kept under `data_dir`, so that it
keeps growing across the probe and the daemon):

1. `GET /wallets/`, what account recording starts with. Its signed payload is `{}`, which
   both of the docs' encodings write the same way, so a refusal here is the key, the secret
   or the nonce, never the encoding.
2. The encoding: a payload that the two encodings write differently, on the one harmless
   signed POST there is: cancelling order 0, which no account has, with an extra field
   holding a space and `!*'()`. The exchange checks the signature before it looks for the
   order, so a 401 means the signature was refused, and any other refusal (400 "no such
   order", 403, 404) that it was accepted. The first encoding tried is the client's
   default; when it is refused, the other one is tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recorder.config import Config
from recorder.exchange.ratelimit import TokenBucket
from recorder.exchange.rest import (
    ExchangeClient,
    ExchangeError,
    HttpError,
    RetryableError,
    RetryPolicy,
    Unauthorized,
)
from recorder.exchange.signing import (
    DEFAULT_SIGN_ENCODING,
    SIGN_ENCODINGS,
    NonceSource,
    SignEncoding,
)
from recorder.probe.endpoints import failure_status, reason_of
from recorder.probe.report import Finding

CANCEL_PATH = "/api/v1/order-cancel/"
ENCODING_CHECK_FORM = {"order": "0", "note": "recorder probe (signature check)!*'"}
"""No order has id 0; `note` is what the two encodings write differently."""


@dataclass(frozen=True, slots=True)
class Attempt:
    encoding: SignEncoding
    accepted: bool | None
    """None: no verdict (429, 5xx, no answer)."""
    status: int | None
    reason: str


def other_encoding(encoding: SignEncoding) -> SignEncoding:
    return next(e for e in SIGN_ENCODINGS if e != encoding)


async def signed_checks(config: Config, once: RetryPolicy) -> list[Finding]:
    exchange = config.exchange
    if exchange.api_key is None or exchange.api_secret is None:
        text = "no exchange.api_key / api_secret configured: signed calls not tried"
        return [Finding("signed.wallets", "skip", text)]
    nonce = NonceSource(config.recorder.data_dir)
    pace = TokenBucket(exchange.private_calls_per_s)

    def client(encoding: SignEncoding) -> ExchangeClient:
        return ExchangeClient(
            exchange.base_url,
            timeout_s=exchange.request_timeout_s,
            api_key=exchange.api_key,
            api_secret=exchange.api_secret,
            nonce=nonce,
            sign_encoding=encoding,
            private_limit=pace,
            retry=once,
        )

    first = DEFAULT_SIGN_ENCODING
    async with client(first) as signer:
        wallets = await _wallets(signer)
        if wallets.outcome != "ok":
            return [wallets, _encoding_not_tried()]
        attempts = [await _encoding_attempt(signer)]
    if attempts[0].accepted is False:
        async with client(other_encoding(first)) as signer:
            attempts.append(await _encoding_attempt(signer))
    return [wallets, encoding_finding(attempts)]


async def _wallets(client: ExchangeClient) -> Finding:
    key = "signed.wallets"
    try:
        wallets = await client.wallets()
    except Unauthorized as exc:
        details = {"status": 401, "accepted": False, "error": exc.reason}
        return Finding(key, "fail", f"refused: HTTP 401: {exc.reason}", details)
    except ExchangeError as exc:
        status = failure_status(exc)
        details = {"status": status, "accepted": None, "error": reason_of(exc)}
        return Finding(key, "fail", reason_of(exc), details)
    details = {"status": 200, "accepted": True, "wallets": len(wallets)}
    return Finding(key, "ok", f"accepted: {len(wallets)} wallets", details)


def _encoding_not_tried() -> Finding:
    return Finding("signed.encoding", "skip", "not tried: the signed wallets call failed")


async def _encoding_attempt(client: ExchangeClient) -> Attempt:
    encoding = client.sign_encoding
    try:
        await client.request(
            "order_cancel", "POST", CANCEL_PATH, form=ENCODING_CHECK_FORM, private=True
        )
    except Unauthorized as exc:
        return Attempt(encoding, False, 401, exc.reason)
    except RetryableError as exc:
        return Attempt(encoding, None, failure_status(exc), reason_of(exc))
    except HttpError as exc:
        return Attempt(encoding, True, exc.status, exc.reason)
    return Attempt(encoding, True, 200, "the cancel of order 0 answered with success")


def encoding_finding(attempts: list[Attempt]) -> Finding:
    key = "signed.encoding"
    details: dict[str, Any] = {
        "first": attempts[0].encoding,
        "attempts": [
            {"encoding": a.encoding, "accepted": a.accepted, "status": a.status, "reason": a.reason}
            for a in attempts
        ],
        "accepted": next((a.encoding for a in attempts if a.accepted), None),
    }
    said = "; ".join(
        f"{a.encoding} {_verdict(a.accepted)} (HTTP {a.status}: {a.reason})" for a in attempts
    )
    first = attempts[0]
    if first.accepted:
        return Finding(key, "ok", said, details)
    if first.accepted is None:
        return Finding(key, "warn", f"no verdict: {said}", details)
    if len(attempts) > 1 and attempts[1].accepted:
        text = (
            f"{said}: the exchange checks {attempts[1].encoding}-encoded payloads; the "
            f"recorder signs {first.encoding}, which differs only on values with spaces or "
            "!*'() (none of its own calls has such)"
        )
        return Finding(key, "warn", text, details)
    return Finding(key, "warn", f"neither encoding accepted: {said}", details)


def _verdict(accepted: bool | None) -> str:
    return {True: "accepted", False: "refused", None: "no verdict"}[accepted]
