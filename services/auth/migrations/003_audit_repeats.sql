-- Repeated failures are counted, not appended: a stranger's wrong passwords for the owner's
-- name would otherwise add rows to the owner's trail without bound. The first failure of a
-- kind (event, outcome, reason, client, username) in a window is an ordinary record in
-- auth.auth_events; the ones after it in the same window add to its count here.
--
-- auth.auth_events is left as it is: once sealed its owner is the superuser, so neither
-- this migration nor the service role could alter it. This table takes the same care: it
-- is sealed alongside it (deploy/roles.py, deploy/postgres/grant-gateway.sh), and its guard
-- lets a count only grow, never be reset, moved or removed while its record exists.
CREATE TABLE auth.auth_event_repeats (
    -- No foreign key: REFERENCES on the sealed auth.auth_events is not the service's to hold.
    -- The guard checks the record instead.
    event_id bigint PRIMARY KEY,
    repeat_key text NOT NULL CHECK (char_length(repeat_key) <= 300),
    window_ends_at timestamptz NOT NULL,
    repeats integer NOT NULL DEFAULT 0 CHECK (repeats >= 0),
    last_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX auth_event_repeats_open_idx
    ON auth.auth_event_repeats (repeat_key, window_ends_at DESC);

CREATE FUNCTION auth.guard_audit_repeats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM auth.auth_events WHERE id = NEW.event_id) THEN
            RAISE EXCEPTION 'auth.auth_event_repeats counts an existing record'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        NEW.repeats := 0;
        NEW.last_at := clock_timestamp();
        NEW.window_ends_at := least(NEW.window_ends_at, clock_timestamp() + interval '1 day');
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE'
       AND NEW.event_id = OLD.event_id AND NEW.repeat_key = OLD.repeat_key
       AND NEW.window_ends_at = OLD.window_ends_at AND NEW.repeats > OLD.repeats THEN
        NEW.last_at := clock_timestamp();
        RETURN NEW;
    END IF;
    -- A count leaves only after its record has (the retention purge removed it).
    IF TG_OP = 'DELETE'
       AND NOT EXISTS (SELECT 1 FROM auth.auth_events WHERE id = OLD.event_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '%.% only counts up', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER auth_event_repeats_guard
    BEFORE INSERT OR UPDATE OR DELETE ON auth.auth_event_repeats
    FOR EACH ROW EXECUTE FUNCTION auth.guard_audit_repeats();
CREATE TRIGGER auth_event_repeats_no_truncate
    BEFORE TRUNCATE ON auth.auth_event_repeats
    FOR EACH STATEMENT EXECUTE FUNCTION auth.guard_audit_repeats();
