-- Chains: where a chain-fired trigger sits in its tree, and the open fan-in joins.

-- One row per trigger a chain fired: its parents (the upstream runs that fired it, the
-- completing one first), the root trigger of its tree and how deep it sits.
CREATE TABLE chain_triggers (
    trigger_id      TEXT PRIMARY KEY REFERENCES triggers (id) ON DELETE CASCADE,
    chain           TEXT NOT NULL,
    root_trigger_id TEXT NOT NULL,
    depth           BIGINT NOT NULL,
    parents         JSONB NOT NULL
);
CREATE INDEX chain_triggers_root ON chain_triggers (root_trigger_id);

-- One row per fan-in join (chain, join key): open while it waits, then fired or expired.
-- `members` holds the latest run seen of each upstream target.
CREATE TABLE chain_joins (
    chain      TEXT NOT NULL,
    join_key   TEXT NOT NULL,
    state      TEXT NOT NULL,
    all_of     JSONB NOT NULL,
    members    JSONB NOT NULL,
    opened_at  TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    closed_at  TIMESTAMPTZ,
    trigger_id TEXT,
    PRIMARY KEY (chain, join_key)
);
CREATE INDEX chain_joins_open ON chain_joins (expires_at) WHERE state = 'open';
CREATE INDEX chain_joins_closed ON chain_joins (closed_at) WHERE closed_at IS NOT NULL;
