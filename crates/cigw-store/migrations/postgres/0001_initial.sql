-- cigw store schema for PostgreSQL.

CREATE TABLE triggers (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    request      JSONB NOT NULL,
    labels       JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    trigger_id        TEXT NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    target            TEXT NOT NULL,
    provider          TEXT NOT NULL,
    account           TEXT NOT NULL,
    branch            TEXT,
    tag               TEXT,
    sha               TEXT,
    parameters        JSONB NOT NULL,
    state             TEXT NOT NULL,
    raw_status        TEXT,
    message           TEXT,
    provider_run_id   TEXT,
    provider_number   BIGINT,
    provider_attempt  BIGINT,
    provider_url      TEXT,
    provider_extra    JSONB,
    unconfirmed       BOOLEAN NOT NULL DEFAULT FALSE,
    sent_at           TIMESTAMPTZ,
    confirm_deadline  TIMESTAMPTZ,
    dispatch_attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       TIMESTAMPTZ,
    next_dispatch_at  TIMESTAMPTZ,
    next_poll_at      TIMESTAMPTZ,
    observed_at       TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    queued_at         TIMESTAMPTZ,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL,
    chain_parent      TEXT,
    rerun_of          TEXT,
    rerun_failed_only BOOLEAN NOT NULL DEFAULT FALSE,
    requested_by      TEXT NOT NULL,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE
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

-- Ids are assigned under a transaction-level advisory lock, so they follow commit order.
CREATE TABLE run_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    target     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    data       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX run_events_run ON run_events (run_id, id);

CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint JSONB NOT NULL,
    response    JSONB NOT NULL,
    trigger_id  TEXT NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_trigger ON idempotency_keys (trigger_id);

CREATE TABLE api_tokens (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    hash                  TEXT NOT NULL,
    scopes                JSONB NOT NULL,
    expires_at            TIMESTAMPTZ,
    allowed_origins       JSONB NOT NULL,
    rate_limit_per_minute BIGINT,
    created_at            TIMESTAMPTZ NOT NULL,
    last_used_at          TIMESTAMPTZ,
    revoked_at            TIMESTAMPTZ
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_hash ON api_tokens (hash);

CREATE TABLE deliveries (
    source      TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, delivery_id)
);
CREATE INDEX deliveries_expiry ON deliveries (expires_at);

CREATE TABLE chain_firings (
    chain           TEXT NOT NULL,
    upstream_run_id TEXT NOT NULL,
    fired_at        TIMESTAMPTZ NOT NULL,
    trigger_id      TEXT,
    PRIMARY KEY (chain, upstream_run_id)
);
CREATE INDEX chain_firings_upstream ON chain_firings (upstream_run_id);

CREATE TABLE cursors (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification    TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    UNIQUE (notification, event_id)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
