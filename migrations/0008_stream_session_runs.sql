-- A recorder keeps several socket.io connections at once (`exchange.stream_connections`),
-- so stream sessions of one process overlap. Which process and which of its connections a
-- session belongs to tells a session left open by a killed process from one still live
-- beside a newer one. NULL for sessions recorded before this migration (one connection).
ALTER TABLE stream_sessions
    ADD COLUMN run_id uuid,
    ADD COLUMN connection smallint;
