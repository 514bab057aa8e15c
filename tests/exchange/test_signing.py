"""Signatures against vectors made outside Python, and a nonce that never goes back.

The fixed vectors were computed with the docs' own JavaScript `serializePayload` under
Node.js (crypto.createHmac) and checked with `openssl dgst -sha256 -hmac`, not with the
code under test; the `python` encoding's with the docs' Python sample (`urlencode`) and
`openssl dgst -sha256 -hmac`.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from pathlib import Path

import pytest

from recorder.exchange.signing import (
    NONCE_FILE,
    SIGN_ENCODINGS,
    NonceSource,
    auth_headers,
    serialize_payload,
    sign,
)

ORDER = {"type": "buy", "pair": "BTC_USD", "amount": "0.0001", "price": "0.1"}
AWKWARD = {"order": 63568, "comment": "a b+c&d=e!*'()~é/"}


def test_fixed_vectors_from_the_docs_javascript() -> None:
    assert (
        sign("0000-0000", "Z%2secret", ORDER)
        == "7dffadb39206d7103eaf441b271b6a577fb8a56e65962736877165cf233dcdf2"
    )
    assert (
        sign("0000-0000", "Z%2secret", {})
        == "50d518603066f65346a3480fd012a8acf16f9777b0d9bee2b101908621a77e29"
    )
    assert (
        sign("k1", "s3cr3t", AWKWARD)
        == "f7511d170067b453be87dbfb175fcec11280203bce5325af38cd687d26dc17fc"
    )


def test_values_are_encoded_as_encode_uri_component_does() -> None:
    # encodeURIComponent: space is %20 (not +), !*'()~ stay, UTF-8 bytes are %-escaped
    assert serialize_payload(AWKWARD) == "comment=a%20b%2Bc%26d%3De!*'()~%C3%A9%2F&order=63568"


def test_the_python_encoding_is_the_docs_python_sample() -> None:
    # urlencode: a space is +, !*'() are escaped, keys are encoded too
    assert (
        serialize_payload(AWKWARD, "python")
        == "comment=a+b%2Bc%26d%3De%21%2A%27%28%29~%C3%A9%2F&order=63568"
    )
    assert (
        sign("k1", "s3cr3t", AWKWARD, "python")
        == "1c4f24f288bce7ba3ff7a29ede82fd81d652696d7b067280eaa2b37c893fc5a5"
    )
    headers = auth_headers("k1", "s3cr3t", AWKWARD, 5, "python")
    assert headers["X-SIGN"] == sign("k1", "s3cr3t", AWKWARD, "python")


def test_the_encodings_agree_where_the_recorder_signs() -> None:
    # order fields, ids and the empty payload of a GET: the two samples write them alike
    for payload in (ORDER, {}, {"order": 63568}, {"amount": Decimal("1E-8"), "pair": "ETH_BTC"}):
        assert serialize_payload(payload, "js") == serialize_payload(payload, "python")
    assert sign("0000-0000", "Z%2secret", ORDER, "python") == sign("0000-0000", "Z%2secret", ORDER)


def test_js_is_the_default_and_an_unknown_encoding_is_refused() -> None:
    assert SIGN_ENCODINGS == ("js", "python")
    assert sign("k1", "s3cr3t", AWKWARD) == sign("k1", "s3cr3t", AWKWARD, "js")
    with pytest.raises(ValueError, match="not a signing encoding"):
        serialize_payload(AWKWARD, "perl")  # type: ignore[arg-type]


def test_signature_matches_an_independent_hmac() -> None:
    message = b"KEYamount=0.00000001&pair=BTC_USD&price=870.69&type=sell"
    expected = hmac.new(b"SECRET", message, hashlib.sha256).hexdigest()
    payload = {
        "type": "sell",
        "price": Decimal("870.69"),
        "pair": "BTC_USD",
        "amount": Decimal("1E-8"),
    }
    assert sign("KEY", "SECRET", payload) == expected


def test_auth_headers() -> None:
    headers = auth_headers("0000-0000", "Z%2secret", ORDER, 1700000000123)
    assert headers == {
        "X-KEY": "0000-0000",
        "X-SIGN": "7dffadb39206d7103eaf441b271b6a577fb8a56e65962736877165cf233dcdf2",
        "X-NONCE": "1700000000123",
    }


def test_booleans_are_not_payload_values() -> None:
    with pytest.raises(TypeError):
        serialize_payload({"x": True})


def test_nonce_grows_strictly_even_when_the_clock_stands_still_or_goes_back() -> None:
    times = iter([1000, 1000, 1000, 999, 5000, 4000])
    source = NonceSource(clock_ms=lambda: next(times))
    assert [source.next() for _ in range(6)] == [1000, 1001, 1002, 1003, 5000, 5001]


def test_nonce_grows_across_restarts(tmp_path: Path) -> None:
    first = NonceSource(tmp_path, clock_ms=lambda: 10_000)
    assert [first.next(), first.next()] == [10_000, 10_001]
    # a restart whose clock is behind (NTP step, another machine): still above the last one
    second = NonceSource(tmp_path, clock_ms=lambda: 5_000)
    assert second.next() == 10_002
    assert (tmp_path / NONCE_FILE).read_text().strip() == "10002"
    assert [p.name for p in tmp_path.iterdir()] == [NONCE_FILE]  # no temporary files left


def test_nonce_state_directory_is_created(tmp_path: Path) -> None:
    source = NonceSource(tmp_path / "a" / "b", clock_ms=lambda: 7)
    assert source.next() == 7
    assert (tmp_path / "a" / "b" / NONCE_FILE).exists()


def test_real_clock_nonce_is_milliseconds(tmp_path: Path) -> None:
    import time

    before = time.time_ns() // 1_000_000
    nonce = NonceSource(tmp_path).next()
    assert before <= nonce <= before + 5_000
