-- The research schema of DESIGN §5: exact decimals (numeric), times as timestamptz,
-- primary keys that make every write idempotent. `received_at` is the recorder's clock.

CREATE TABLE currencies (
    short_name    text PRIMARY KEY,
    sign          text NOT NULL,
    first_seen_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE pairs (
    name               text PRIMARY KEY,
    currency1          text NOT NULL,
    currency2          text NOT NULL,
    price_precision    integer NOT NULL,
    minimum_order_size numeric NOT NULL,
    maximum_order_size numeric NOT NULL,
    first_seen_at      timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

-- The exchange's trade tape (GET /exchanges/); tid is the exchange's global trade id.
CREATE TABLE trades (
    pair        text NOT NULL,
    tid         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    type        text NOT NULL CHECK (type IN ('buy', 'sell')),
    price       numeric NOT NULL,
    amount      numeric NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (pair, tid)
);
CREATE INDEX trades_pair_ts ON trades (pair, ts);

-- socket.io book events: a new order (amount = what rests after matching) or a cancel.
CREATE TABLE book_events (
    pair            text NOT NULL,
    oid             bigint NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('new', 'cancel')),
    ts              timestamptz NOT NULL,
    type            text NOT NULL CHECK (type IN ('buy', 'sell')),
    price           numeric NOT NULL,
    amount          numeric NOT NULL,
    cancel_order_id bigint,
    received_at     timestamptz NOT NULL,
    session_id      uuid NOT NULL,
    PRIMARY KEY (pair, oid, kind)
);
CREATE INDEX book_events_pair_ts ON book_events (pair, ts);

-- Trades as seen inside new-order events: incoming order oid filled resting order o_id.
CREATE TABLE book_fills (
    pair        text NOT NULL,
    tid         bigint NOT NULL,
    oid         bigint NOT NULL,
    o_id        bigint NOT NULL,
    type        text NOT NULL CHECK (type IN ('buy', 'sell')),
    price       numeric NOT NULL,
    amount      numeric NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (pair, tid)
);
CREATE INDEX book_fills_pair_ts ON book_fills (pair, ts);

CREATE TABLE book_snapshots (
    snapshot_id uuid PRIMARY KEY,
    pair        text NOT NULL,
    taken_at    timestamptz NOT NULL,   -- when the request was sent
    received_at timestamptz NOT NULL,   -- when the answer arrived
    grouped     boolean NOT NULL,
    reason      text NOT NULL           -- interval, connect, resync, ...
);
CREATE INDEX book_snapshots_pair_taken_at ON book_snapshots (pair, taken_at);

-- One row per resting order (ungrouped) or price level (grouped); pos 0 is the best price.
CREATE TABLE book_snapshot_orders (
    snapshot_id uuid NOT NULL,
    side        text NOT NULL CHECK (side IN ('buy', 'sell')),
    pos         integer NOT NULL,
    order_id    bigint,
    price       numeric NOT NULL,
    amount      numeric NOT NULL,
    order_ts    timestamptz,
    PRIMARY KEY (snapshot_id, side, pos)
);

-- Chart candles; bucket is the candle's start. The open candle is upserted until it closes.
CREATE TABLE candles (
    pair       text NOT NULL,
    resolution text NOT NULL CHECK (resolution IN ('1', '5', '15', '30', '60', '240', 'D')),
    bucket     timestamptz NOT NULL,
    open       numeric NOT NULL,
    high       numeric NOT NULL,
    low        numeric NOT NULL,
    close      numeric NOT NULL,
    volume     numeric NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (pair, resolution, bucket)
);

-- When the socket stream was live: written at connect, completed at disconnect.
CREATE TABLE stream_sessions (
    session_id      uuid PRIMARY KEY,
    connected_at    timestamptz NOT NULL,
    disconnected_at timestamptz,
    reason          text
);

-- Everything that could not be parsed, verbatim, with the reason.
CREATE TABLE raw_messages (
    id          uuid PRIMARY KEY,
    received_at timestamptz NOT NULL,
    source      text NOT NULL,
    event       text,
    payload     text NOT NULL,
    error       text NOT NULL
);
CREATE INDEX raw_messages_received_at ON raw_messages (received_at);

-- The owner's private account (recorded only when api_key/api_secret are set).
CREATE TABLE account_wallets (
    currency    text NOT NULL,
    observed_at timestamptz NOT NULL,
    balance     numeric NOT NULL,
    reserve     numeric NOT NULL,
    PRIMARY KEY (currency, observed_at)
);

CREATE TABLE account_orders (
    id            bigint PRIMARY KEY,
    pair          text NOT NULL,
    type          text NOT NULL CHECK (type IN ('buy', 'sell')),
    status        integer NOT NULL,     -- 1 active, 2 cancelled, 3 done
    price         numeric NOT NULL,
    amount        numeric NOT NULL,
    first_seen_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE account_trades (
    id          bigint PRIMARY KEY,
    pair        text NOT NULL,
    type        text NOT NULL CHECK (type IN ('buy', 'sell')),
    price       numeric NOT NULL,
    amount      numeric NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE TABLE account_deposits (
    id          bigint PRIMARY KEY,
    currency    text NOT NULL,
    amount      numeric NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE TABLE account_withdraws (
    id            bigint PRIMARY KEY,
    currency      text NOT NULL,
    amount        numeric NOT NULL,
    status        integer NOT NULL,     -- 10 new, 20 verified, 30 approved, 40 refused, 50 cancelled
    ts            timestamptz NOT NULL,
    first_seen_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
