-- One row per fired schedule slot: written with the slot's trigger in one transaction, so a slot
-- fires once across restarts and replicas.
CREATE TABLE schedule_firings (
    schedule   TEXT NOT NULL,
    slot       TIMESTAMPTZ NOT NULL,
    fired_at   TIMESTAMPTZ NOT NULL,
    trigger_id TEXT NOT NULL,
    PRIMARY KEY (schedule, slot)
);
