"""`books_at` on a real recording: each book is `book_at`'s rows at its instant, in their
order, and the book at the end is the simulator's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from recorder.research.books import Book, books_at
from tests.research.conftest import PAIRS, Recording


def rows(book: Book) -> list[tuple[object, ...]]:
    """The book as book_at's rows: buys then sells, each side in its order."""
    return [
        (side, order.order_id, order.price, order.amount)
        for side, orders in (("buy", book.bids), ("sell", book.asks))
        for order in orders
    ]


def test_every_book_is_book_at_at_its_instant(recording: Recording) -> None:
    with psycopg.connect(recording.dsn) as conn:
        # From where book_at has a snapshot the stream followed to start from.
        first, last = conn.execute(
            "SELECT min(valid_from), max(valid_to) FROM book_coverage WHERE pair = %s",
            (PAIRS[0],),
        ).fetchone()  # type: ignore[misc]
        step = (last - first) / 40
        instants = [first - timedelta(seconds=1), *(first + step * k for k in range(41))]
        books = list(books_at(conn, PAIRS[0], reversed(instants), batch=7))
        assert [book.at for book in books] == sorted(instants)
        assert books[0].bids == books[0].asks == ()  # before it
        for book in books:
            expected = conn.execute(
                "SELECT side, order_id, price, amount FROM book_at(%s, %s)", (PAIRS[0], book.at)
            ).fetchall()
            assert rows(book) == expected, book.at
        assert sum(len(book.bids) + len(book.asks) for book in books) > 100
        assert len({book.bids for book in books}) > 10  # the book moved along the recording


def test_the_book_at_the_end_is_the_simulators(recording: Recording) -> None:
    with psycopg.connect(recording.dsn) as conn:
        for pair in PAIRS:
            (book,) = books_at(conn, pair, [datetime.now(UTC)])
            bid, bid_size = book.levels("buy")[0]
            ask, ask_size = book.levels("sell")[0]
            assert (bid, bid_size, ask, ask_size) == recording.tops[pair], pair
            assert (book.best_bid, book.best_ask) == (bid, ask)
            assert sum(amount for _, amount in book.levels("buy")) == sum(
                order.amount for order in book.bids
            )


def test_instants_need_a_time_zone_and_batches_an_instant(recording: Recording) -> None:
    with psycopg.connect(recording.dsn) as conn:
        with pytest.raises(ValueError, match="time zone"):
            list(books_at(conn, PAIRS[0], [datetime(2026, 1, 1)]))
        with pytest.raises(ValueError, match="batch"):
            list(books_at(conn, PAIRS[0], [datetime.now(UTC)], batch=0))
