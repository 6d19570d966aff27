-- Typed dispatch history (issue 12): how many sends of a run may have reached its provider and
-- when the latest of them was made, so reconciliation never has to read the event log; and when
-- the tracker last read the run at its provider and when it was last asked to refresh, so
-- refreshes can be coalesced.
ALTER TABLE runs ADD COLUMN maybe_sent_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN last_maybe_sent_at INTEGER;
ALTER TABLE runs ADD COLUMN last_polled_at INTEGER;
ALTER TABLE runs ADD COLUMN last_refresh_at INTEGER;
-- Write-ahead mark of a send in progress: set just before a trigger is sent, cleared when its
-- outcome is recorded. A claim that finds it set knows an earlier attempt may have sent the
-- trigger (the process died mid-call); one that finds it clear knows nothing was sent.
ALTER TABLE runs ADD COLUMN sending_since INTEGER;
