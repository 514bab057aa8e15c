"""The readings of what the exchange's docs leave open, as simulator settings.

The docs do not say which id a cancel names, which event name book payloads arrive under,
how large a trade page may be, or which of their two samples' url-encodings the signature
check expects (docs/operations.md, "First run against a live exchange"). The daemon's
integration tests run under our first reading and under all the other readings at once, so
that a test, or a part of the recorder, that silently assumes the first reading fails.
"""

from __future__ import annotations

from typing import Any

DIALECTS: dict[str, dict[str, Any]] = {
    "first-reading": {},
    "other-readings": {
        "cancel_id": "cancel_order_id",
        "event_name": "orderbook",  # (orderbook, [book_<pair>, payload])
        "max_page": 100,
        "sign_encoding": "python",
    },
}
"""Name -> `SimSettings` fields; the default settings are the first reading."""
