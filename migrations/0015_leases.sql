-- Several recorders on one database share the work through leases (docs/operations.md,
-- "Running several recorders"). A table with an expiry, not advisory locks: an advisory
-- lock lives as long as its session, so a recorder that hangs (SIGSTOP, a stuck event
-- loop) with its connection open keeps it until TCP notices, which may be hours; and a lock
-- has one holder, where `recorder.redundancy` wants several. Every expiry is set by the
-- database's clock (now()), so the recorders' clocks never have to agree.

-- One row per live recorder process (a run), renewed with its leases: the number of
-- unexpired rows is how many recorders share the pairs, which sets each one's fair share.
CREATE TABLE recorder_members (
    run_id     uuid PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    -- Where `pid` means something: the kernel boot and the pid namespace. A member that finds
    -- another of its own process space whose pid is not running knows it died and frees its
    -- leases at once instead of waiting for them to expire (a restart after a crash).
    process_space text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Who records what: a resource is a pair name, or 'account' for the private endpoints.
-- A resource has `recorder.redundancy` slots (the account one); a slot is held by one owner
-- until expires_at, renewed by its owner only (UPDATE ... WHERE owner = me), taken over by
-- anyone once expired. One owner never holds two slots of one resource.
CREATE TABLE leases (
    resource    text NOT NULL,
    slot        smallint NOT NULL CHECK (slot >= 0),
    owner       uuid NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (resource, slot),
    UNIQUE (resource, owner)
);

-- Who owned what when, for `recorder coverage` and post-mortems: one row per holding, from
-- its claim to its release. released_at is NULL while held (or when its owner died and
-- nobody has taken the resource since); reason says why it ended: 'released' (rebalanced or
-- delisted), 'stopped' (the owner shut down), 'expired' (not renewed in time: the owner
-- died, hung or lost the database; released_at is then its last renewal, the last moment it
-- is known to have been recording, so that the gap after it is not understated).
CREATE TABLE lease_history (
    resource    text NOT NULL,
    owner       uuid NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    acquired_at timestamptz NOT NULL,
    released_at timestamptz,
    reason      text,
    PRIMARY KEY (resource, owner, acquired_at)
);
CREATE INDEX lease_history_open ON lease_history (owner) WHERE released_at IS NULL;

-- Stretches in which a resource had no owner: between the end of one holding and the next
-- claim (a takeover or a rebalance). Nothing of the pair's book stream was recorded then;
-- its trades were caught up by the next owner from the last stored trade.
CREATE VIEW lease_gaps AS
WITH ordered AS (
    SELECT h.resource, h.acquired_at, h.owner,
           max(coalesce(h.released_at, 'infinity')) OVER (
               PARTITION BY h.resource ORDER BY h.acquired_at
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS previous_end
    FROM lease_history h
)
SELECT resource, previous_end AS gap_start, acquired_at AS gap_end,
       acquired_at - previous_end AS duration, owner AS next_owner
FROM ordered
WHERE previous_end < acquired_at;

-- The daemon's role deletes what it releases (0005 grants no DELETE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recorder_writer') THEN
        RETURN;
    END IF;
    GRANT DELETE ON leases, recorder_members TO recorder_writer;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant DELETE on leases to recorder_writer (%): skipping', SQLERRM;
END
$$;
