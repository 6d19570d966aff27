-- Indexes for the filters the API and the event stream use, and exact run counts per terminal
-- state that /metrics can read without scanning `runs` (docs/storage.md, "Query plans").

-- `GET /v1/runs?state=`: newest first within one state.
CREATE INDEX runs_state_newest ON runs (state, created_at DESC, id DESC);
-- Non-terminal runs only (few, however long the retention): the per-state gauge and the
-- unconfirmed gauge are counted from this index alone.
CREATE INDEX runs_active ON runs (state, unconfirmed)
    WHERE state NOT IN ('succeeded', 'failed', 'canceled', 'skipped', 'error');
-- `GET /v1/events?trigger_id=` / `?target=` after a Last-Event-ID.
CREATE INDEX run_events_trigger ON run_events (trigger_id, id);
CREATE INDEX run_events_target ON run_events (target, id);

-- Terminal runs per state, kept by the triggers below in the transaction that moves, inserts or
-- deletes (prunes) a run, so the count is exact and costs one row read per state. Terminal states
-- are final (DESIGN.md §2), so a run enters one at most once. `shard` spreads PostgreSQL's row
-- locks; SQLite has one writer and always uses shard 0.
CREATE TABLE run_state_totals (
    state TEXT NOT NULL,
    shard INTEGER NOT NULL,
    runs  INTEGER NOT NULL,
    PRIMARY KEY (state, shard)
);

INSERT INTO run_state_totals (state, shard, runs)
    SELECT state, 0, COUNT(*) FROM runs
    WHERE state IN ('succeeded', 'failed', 'canceled', 'skipped', 'error')
    GROUP BY state;

CREATE TRIGGER runs_total_insert AFTER INSERT ON runs
    WHEN NEW.state IN ('succeeded', 'failed', 'canceled', 'skipped', 'error')
BEGIN
    INSERT INTO run_state_totals (state, shard, runs) VALUES (NEW.state, 0, 1)
        ON CONFLICT (state, shard) DO UPDATE SET runs = runs + 1;
END;

CREATE TRIGGER runs_total_enter AFTER UPDATE OF state ON runs
    WHEN NEW.state IS NOT OLD.state AND NEW.state IN ('succeeded', 'failed', 'canceled', 'skipped', 'error')
BEGIN
    INSERT INTO run_state_totals (state, shard, runs) VALUES (NEW.state, 0, 1)
        ON CONFLICT (state, shard) DO UPDATE SET runs = runs + 1;
END;

CREATE TRIGGER runs_total_leave AFTER UPDATE OF state ON runs
    WHEN NEW.state IS NOT OLD.state AND OLD.state IN ('succeeded', 'failed', 'canceled', 'skipped', 'error')
BEGIN
    UPDATE run_state_totals SET runs = runs - 1 WHERE state = OLD.state AND shard = 0;
END;

CREATE TRIGGER runs_total_delete AFTER DELETE ON runs
    WHEN OLD.state IN ('succeeded', 'failed', 'canceled', 'skipped', 'error')
BEGIN
    UPDATE run_state_totals SET runs = runs - 1 WHERE state = OLD.state AND shard = 0;
END;
