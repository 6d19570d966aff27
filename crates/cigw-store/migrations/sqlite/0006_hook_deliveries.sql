-- Inbound hook deliveries (docs/hooks.md): one row per verified delivery, keyed by the sender's
-- delivery id, kept until `expires_at` (retention.deliveries) so a repeated delivery answers
-- with its first response. A delivery that started a trigger is written in the trigger's
-- transaction, so a crash can neither lose the dedupe nor double the trigger. Headers (minus
-- secret-bearing ones) and the body are kept for the newest `keep_deliveries` of each hook
-- (replay); older rows keep only the outcome and the response.
CREATE TABLE hook_deliveries (
    hook        TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    headers     TEXT,
    body        TEXT,
    outcome     TEXT NOT NULL,
    rule        TEXT,
    status      INTEGER NOT NULL,
    response    TEXT NOT NULL,
    trigger_id  TEXT,
    PRIMARY KEY (hook, delivery_id)
);
CREATE INDEX hook_deliveries_newest ON hook_deliveries (hook, received_at DESC, delivery_id DESC);
CREATE INDEX hook_deliveries_expiry ON hook_deliveries (expires_at);
