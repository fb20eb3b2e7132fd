-- The media audit trail: deletions, exports, imports and admin commands, append-only.
-- The table is sealed after migration by a privileged step (deploy/roles.py, or
-- deploy/postgres/grant-gateway.sh under compose): ownership moves away from the service
-- role, which keeps only INSERT and SELECT.
CREATE TABLE media.audit_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    action text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 64),
    outcome text NOT NULL CHECK (char_length(outcome) BETWEEN 1 AND 32),
    -- A user id, or 'admin' for a command run on the server.
    actor text NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 64),
    user_id uuid,
    ip text,
    request_id text,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_user_idx ON media.audit_events (user_id, occurred_at DESC, id DESC);
CREATE INDEX audit_events_occurred_at_idx ON media.audit_events (occurred_at);

-- Records are stamped by the database, never by the writer, and are never rewritten.
-- A DELETE passes only inside purge_audit, and only for records past the retention floor.
CREATE FUNCTION media.guard_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.occurred_at := clock_timestamp();
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE'
       AND current_setting('tempo.audit_purge', true) = 'on'
       AND OLD.occurred_at < clock_timestamp() - interval '30 days' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_stamp
    BEFORE INSERT ON media.audit_events
    FOR EACH ROW EXECUTE FUNCTION media.guard_audit();
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON media.audit_events
    FOR EACH ROW EXECUTE FUNCTION media.guard_audit();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON media.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION media.guard_audit();

-- The one way records leave: SECURITY DEFINER, so that once the table is sealed the
-- service role can run the retention purge without holding DELETE itself.
CREATE FUNCTION media.purge_audit(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    IF retention_days IS NULL OR retention_days < 30 THEN
        RAISE EXCEPTION 'audit records are kept at least 30 days'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('tempo.audit_purge', 'on', true);
    DELETE FROM media.audit_events
        WHERE occurred_at < clock_timestamp() - make_interval(days => retention_days);
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('tempo.audit_purge', 'off', true);
    RETURN removed;
END
$$;
