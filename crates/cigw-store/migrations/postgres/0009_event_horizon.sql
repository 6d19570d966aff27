-- Event ids in a readable order without a global lock (DESIGN.md §5).
--
-- Until now every event-writing transaction held one advisory lock through its commit, so ids
-- followed commit order but every write waited for the previous one's fsync. Now writers draw
-- ids concurrently and readers stop below the lowest id a transaction still in progress holds:
--
-- * a writer takes a transaction-level advisory lock on (space, its backend pid), draws the id,
--   then takes a transaction-level advisory lock on the id itself; both end with its commit or
--   rollback, so nothing can leak;
-- * a reader reads the sequence's last value S first, then the lock table: an id at most S is
--   committed or aborted unless its writer still holds its id lock, or is between drawing and
--   locking (it then holds the pid lock and no id lock). The horizon is the lower of S and the
--   lowest locked id minus one; with a writer between the two steps it is unknown for an
--   instant (NULL), and the reader looks again.

CREATE FUNCTION cigw_next_event_id() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1667852151, pg_backend_pid());
    n := nextval('run_events_id_seq');
    PERFORM pg_advisory_xact_lock(n);
    RETURN n;
END
$$;

CREATE FUNCTION cigw_event_horizon() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    drawn bigint;
    called boolean;
    lowest bigint;
    between_steps boolean;
BEGIN
    SELECT last_value, is_called INTO drawn, called FROM run_events_id_seq;
    IF NOT called THEN
        drawn := drawn - 1;
    END IF;
    WITH held AS (
        SELECT pid, objsubid, classid, objid
        FROM pg_locks
        WHERE locktype = 'advisory' AND granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    ),
    ids AS (
        -- One-bigint keys: classid holds the high 32 bits, objid the low ones. Keys above 2^52
        -- are someone else's (no event id gets there).
        SELECT pid, (classid::bigint << 32) | objid::bigint AS id
        FROM held WHERE objsubid = 1 AND classid::bigint < 1048576
    ),
    writers AS (
        SELECT pid FROM held WHERE objsubid = 2 AND classid::bigint = 1667852151
    )
    SELECT (SELECT min(id) FROM ids),
           EXISTS (SELECT 1 FROM writers w WHERE NOT EXISTS (SELECT 1 FROM ids i WHERE i.pid = w.pid))
    INTO lowest, between_steps;
    IF between_steps THEN
        RETURN NULL;
    END IF;
    RETURN least(drawn, coalesce(lowest - 1, drawn));
END
$$;
