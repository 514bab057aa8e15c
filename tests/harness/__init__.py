"""What tests and benches need to run the real parts, in one place.

- `waiting.eventually`: wait on a condition (never a fixed sleep), failing with what was
  awaited and what the check last gave.
- `ports`: servers bind port 0 and report the port they got; `refused_port` for a port
  where nothing listens; `free_port` only where nothing can report a port.
- `postgres`: `EmbeddedPostgres` (a server of its own, which `crash()` stops as a crash
  does and `restart()` brings back), `fresh_database`, `query`.
- `config.write_config`: the recorder's TOML config, metrics on port 0.
- `recorder_process.RecorderProcess`: `recorder run` as a real process (start, SIGTERM,
  SIGKILL, exit code, its log, its metrics endpoint as it reports it).
- `daemon`: the daemon in-process against the simulator (config, start, stop, the book
  check).
- `deliveries.assert_stored_as_delivered`: the database against what the simulator sent
  each connection, exactly.
- `chaos`: the chaos run's driver and verdict, run by tests/test_chaos.py and bench/chaos.py.

Tests import from here, never from bench/; the benches may import from here.
"""
