-- cigw store schema for SQLite. Times are integer microseconds since the Unix epoch (UTC);
-- JSON columns are text.

CREATE TABLE triggers (
    id           TEXT PRIMARY KEY NOT NULL,
    source       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    request      TEXT NOT NULL,
    labels       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY NOT NULL,
    trigger_id        TEXT NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    target            TEXT NOT NULL,
    provider          TEXT NOT NULL,
    account           TEXT NOT NULL,
    branch            TEXT,
    tag               TEXT,
    sha               TEXT,
    parameters        TEXT NOT NULL,
    state             TEXT NOT NULL,
    raw_status        TEXT,
    message           TEXT,
    provider_run_id   TEXT,
    provider_number   INTEGER,
    provider_attempt  INTEGER,
    provider_url      TEXT,
    provider_extra    TEXT,
    unconfirmed       INTEGER NOT NULL DEFAULT 0,
    sent_at           INTEGER,
    confirm_deadline  INTEGER,
    dispatch_attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       INTEGER,
    next_dispatch_at  INTEGER,
    next_poll_at      INTEGER,
    observed_at       INTEGER,
    created_at        INTEGER NOT NULL,
    queued_at         INTEGER,
    started_at        INTEGER,
    finished_at       INTEGER,
    updated_at        INTEGER NOT NULL,
    chain_parent      TEXT,
    rerun_of          TEXT,
    rerun_failed_only INTEGER NOT NULL DEFAULT 0,
    requested_by      TEXT NOT NULL,
    cancel_requested  INTEGER NOT NULL DEFAULT 0
);

-- One owner per provider build, across replicas.
CREATE UNIQUE INDEX runs_provider_build ON runs (target, provider_run_id, provider_attempt)
    WHERE provider_run_id IS NOT NULL;
CREATE INDEX runs_trigger ON runs (trigger_id, created_at);
CREATE INDEX runs_newest ON runs (created_at DESC, id DESC);
CREATE INDEX runs_target_newest ON runs (target, created_at DESC, id DESC);
CREATE INDEX runs_due_dispatch ON runs (next_dispatch_at) WHERE next_dispatch_at IS NOT NULL;
CREATE INDEX runs_due_poll ON runs (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- AUTOINCREMENT: ids are never reused after pruning, so Last-Event-ID stays meaningful.
CREATE TABLE run_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    target     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX run_events_run ON run_events (run_id, id);

CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response    TEXT NOT NULL,
    trigger_id  TEXT NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_trigger ON idempotency_keys (trigger_id);

CREATE TABLE api_tokens (
    id                    TEXT PRIMARY KEY NOT NULL,
    name                  TEXT NOT NULL,
    hash                  TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    expires_at            INTEGER,
    allowed_origins       TEXT NOT NULL,
    rate_limit_per_minute INTEGER,
    created_at            INTEGER NOT NULL,
    last_used_at          INTEGER,
    revoked_at            INTEGER
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_hash ON api_tokens (hash);

CREATE TABLE deliveries (
    source      TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (source, delivery_id)
);
CREATE INDEX deliveries_expiry ON deliveries (expires_at);

CREATE TABLE chain_firings (
    chain           TEXT NOT NULL,
    upstream_run_id TEXT NOT NULL,
    fired_at        INTEGER NOT NULL,
    trigger_id      TEXT,
    PRIMARY KEY (chain, upstream_run_id)
);
CREATE INDEX chain_firings_upstream ON chain_firings (upstream_run_id);

CREATE TABLE cursors (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification    TEXT NOT NULL,
    event_id        INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    UNIQUE (notification, event_id)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
