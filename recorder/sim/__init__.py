"""The simulated bitexbit exchange (`recorder sim`): a faithful stand-in to test against.

One module per job:

- `engine`: the price-time-priority matching engine (pure; the truth of books and trades);
- `flow`: the seeded order flow of the other traders, and the generated history;
- `candles`: chart candles computed from the trades (pure);
- `wire`: the docs' JSON shapes, with exact decimals;
- `auth`, `accounts`, `ratelimit`: private-API signatures, seeded accounts, rate limits;
- `faults`: the fault switches;
- `rest`: the REST endpoints (exchange and admin);
- `server`: the running simulator (socket.io, emission, order flow) and `run_sim` for tests;
- `cli`: the `recorder sim` command.
"""
