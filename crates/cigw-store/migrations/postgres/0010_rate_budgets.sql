-- Provider request budgets shared by the replicas (crates/cigw-core/src/shared_budget.rs).
--
-- One row per provider credential (the key is the provider kind and a SHA-256 fingerprint of the
-- credential's identity, never the credential): the moment, on this server's clock in
-- microseconds since the epoch, from which its next request slot is free (GCRA's "theoretical
-- arrival time"). A replica books the slots its waiting calls need in one call of
-- cigw_book_budget, under the row's lock, and sends each call at its slot's time. SQLite (one
-- process) has no such table: its accounts keep their limiters in memory.

CREATE TABLE rate_budgets (
    key TEXT PRIMARY KEY,
    next_free_us BIGINT NOT NULL
);

-- Book up to p_want slots p_spacing_us apart, each only while it lies at most p_ahead_us past
-- now. Returns how many were booked and how far past now the first one (or, with none, the next
-- free one) lies.
CREATE FUNCTION cigw_book_budget(p_key TEXT, p_spacing_us BIGINT, p_ahead_us BIGINT, p_want INTEGER)
RETURNS TABLE (booked INTEGER, backlog_us BIGINT) LANGUAGE plpgsql AS $$
DECLARE
    free_us BIGINT;
    now_us BIGINT;
    n INTEGER;
BEGIN
    SELECT next_free_us INTO free_us FROM rate_budgets WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_budgets (key, next_free_us) VALUES (p_key, 0) ON CONFLICT (key) DO NOTHING;
        SELECT next_free_us INTO free_us FROM rate_budgets WHERE key = p_key FOR UPDATE;
    END IF;
    -- Read after the lock is held: a booking that waited for another still counts from now.
    now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    free_us := greatest(free_us, now_us);
    n := least(p_want, greatest(0, floor((now_us + p_ahead_us - free_us)::NUMERIC / p_spacing_us) + 1))::INTEGER;
    IF n > 0 THEN
        UPDATE rate_budgets SET next_free_us = free_us + n * p_spacing_us WHERE key = p_key;
    END IF;
    RETURN QUERY SELECT n, free_us - now_us;
END
$$;
