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

-- Terminal runs per state, kept by the trigger below in the transaction that moves, inserts or
-- deletes (prunes) a run, so the count is exact and costs a few row reads per state. Terminal
-- states are final (DESIGN.md §2), so a run enters one at most once. Each run counts in one of 16
-- shards (a hash of its id), so transactions ending runs in the same state rarely wait for the
-- same counter row.
CREATE TABLE run_state_totals (
    state TEXT NOT NULL,
    shard INTEGER NOT NULL,
    runs  BIGINT NOT NULL,
    PRIMARY KEY (state, shard)
);

INSERT INTO run_state_totals (state, shard, runs)
    SELECT state, hashtext(id) & 15, COUNT(*) FROM runs
    WHERE state IN ('succeeded', 'failed', 'canceled', 'skipped', 'error')
    GROUP BY 1, 2;

CREATE FUNCTION runs_count_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    terminal CONSTANT TEXT[] := ARRAY['succeeded', 'failed', 'canceled', 'skipped', 'error'];
    was TEXT;
    now_in TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        now_in := NEW.state;
    ELSIF TG_OP = 'DELETE' THEN
        was := OLD.state;
    ELSIF OLD.state IS DISTINCT FROM NEW.state THEN
        was := OLD.state;
        now_in := NEW.state;
    END IF;
    IF was = ANY (terminal) THEN
        UPDATE run_state_totals SET runs = runs - 1 WHERE state = was AND shard = (hashtext(OLD.id) & 15);
    END IF;
    IF now_in = ANY (terminal) THEN
        INSERT INTO run_state_totals (state, shard, runs) VALUES (now_in, hashtext(NEW.id) & 15, 1)
            ON CONFLICT (state, shard) DO UPDATE SET runs = run_state_totals.runs + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_count_terminal AFTER INSERT OR DELETE OR UPDATE OF state ON runs
    FOR EACH ROW EXECUTE FUNCTION runs_count_terminal();
