-- An idempotency key's turn and its read in one round trip.
--
-- Two intakes of one key take turns on a transaction-level advisory lock, then read the key.
-- Sent as two statements that was two of a trigger's eight round trips. Inside this function
-- the read still comes after the lock: a VOLATILE function takes a fresh snapshot for each
-- statement it runs, so the read sees the key a previous holder of the turn committed.

CREATE FUNCTION cigw_locked_key(space integer, key_scope text, key_name text)
RETURNS SETOF idempotency_keys LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(space, hashtext(key_scope || chr(1) || key_name));
    RETURN QUERY SELECT * FROM idempotency_keys WHERE scope = key_scope AND key = key_name;
END
$$;
