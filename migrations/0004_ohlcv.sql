-- OHLCV from the trade tape at 1 minute, 1 hour and 1 day.
-- TimescaleDB: continuous aggregates, 1h and 1d built on 1m (hierarchical), real-time
-- (materialized_only = false) so the newest buckets are current. Plain PostgreSQL: views
-- with the same names and columns. `open`/`close` are the first/last trade by trade id.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE MATERIALIZED VIEW ohlcv_1m
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT pair, time_bucket(INTERVAL '1 minute', ts) AS bucket,
               first(price, tid) AS open, max(price) AS high, min(price) AS low,
               last(price, tid) AS close, sum(amount) AS volume,
               sum(price * amount) AS quote_volume, count(*) AS trades
        FROM trades GROUP BY pair, time_bucket(INTERVAL '1 minute', ts)
        WITH NO DATA;
        PERFORM add_continuous_aggregate_policy('ohlcv_1m', start_offset => INTERVAL '3 days',
            end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');

        CREATE MATERIALIZED VIEW ohlcv_1h
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT pair, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
               first(open, bucket) AS open, max(high) AS high, min(low) AS low,
               last(close, bucket) AS close, sum(volume) AS volume,
               sum(quote_volume) AS quote_volume, sum(trades) AS trades
        FROM ohlcv_1m GROUP BY pair, time_bucket(INTERVAL '1 hour', bucket)
        WITH NO DATA;
        PERFORM add_continuous_aggregate_policy('ohlcv_1h', start_offset => INTERVAL '7 days',
            end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '10 minutes');

        CREATE MATERIALIZED VIEW ohlcv_1d
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT pair, time_bucket(INTERVAL '1 day', bucket) AS bucket,
               first(open, bucket) AS open, max(high) AS high, min(low) AS low,
               last(close, bucket) AS close, sum(volume) AS volume,
               sum(quote_volume) AS quote_volume, sum(trades) AS trades
        FROM ohlcv_1h GROUP BY pair, time_bucket(INTERVAL '1 day', bucket)
        WITH NO DATA;
        PERFORM add_continuous_aggregate_policy('ohlcv_1d', start_offset => INTERVAL '60 days',
            end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour');
    ELSE
        CREATE VIEW ohlcv_1m AS
        SELECT pair, date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket,
               (array_agg(price ORDER BY tid))[1] AS open, max(price) AS high,
               min(price) AS low, (array_agg(price ORDER BY tid DESC))[1] AS close,
               sum(amount) AS volume, sum(price * amount) AS quote_volume,
               count(*) AS trades
        FROM trades GROUP BY 1, 2;

        CREATE VIEW ohlcv_1h AS
        SELECT pair, date_bin(INTERVAL '1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket,
               (array_agg(price ORDER BY tid))[1] AS open, max(price) AS high,
               min(price) AS low, (array_agg(price ORDER BY tid DESC))[1] AS close,
               sum(amount) AS volume, sum(price * amount) AS quote_volume,
               count(*) AS trades
        FROM trades GROUP BY 1, 2;

        CREATE VIEW ohlcv_1d AS
        SELECT pair, date_bin(INTERVAL '1 day', ts, TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket,
               (array_agg(price ORDER BY tid))[1] AS open, max(price) AS high,
               min(price) AS low, (array_agg(price ORDER BY tid DESC))[1] AS close,
               sum(amount) AS volume, sum(price * amount) AS quote_volume,
               count(*) AS trades
        FROM trades GROUP BY 1, 2;
    END IF;
END
$$;
