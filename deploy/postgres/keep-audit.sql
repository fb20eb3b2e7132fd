-- The event trigger function that keeps the audit trails: a service role owns its schema,
-- and a schema owner may drop anything in it; this refuses a drop that would take an audit
-- table or its guards with it, unless a superuser asks (a deliberate teardown).
-- Installed by deploy/roles.py (the local stack) and deploy/postgres/grant-gateway.sh
-- (compose).
CREATE OR REPLACE FUNCTION public.tempo_keep_audit() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped record;
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    FOR dropped IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        IF dropped.object_identity IN ('auth.auth_events', 'media.audit_events',
                                       'auth.guard_audit()', 'media.guard_audit()',
                                       'auth.purge_audit(integer)',
                                       'media.purge_audit(integer)',
                                       'auth.auth_event_repeats',
                                       'auth.guard_audit_repeats()')
           OR dropped.object_identity LIKE '% on auth.auth_events'
           OR dropped.object_identity LIKE '% on auth.auth_event_repeats'
           OR dropped.object_identity LIKE '% on media.audit_events' THEN
            RAISE EXCEPTION '% belongs to an append-only audit trail',
                dropped.object_identity USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
END
$$;
