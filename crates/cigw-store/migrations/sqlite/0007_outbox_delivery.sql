-- Outbound notifications (issue 16): each outbox row remembers its run, so deliveries of one run
-- and notification go out in event order, and the outcome of its latest attempt.
ALTER TABLE outbox ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN last_attempt_at INTEGER;
ALTER TABLE outbox ADD COLUMN last_status INTEGER;
-- The statuses are now pending, delivered and dead (dead-lettered).
UPDATE outbox SET status = 'dead' WHERE status = 'abandoned';
-- The claim's "no earlier pending row of this run" test, and the admin listing by run.
CREATE INDEX outbox_run_order ON outbox (run_id, notification, event_id);
-- The admin listing by status, newest first, and the pending count.
CREATE INDEX outbox_by_status ON outbox (status, id);
