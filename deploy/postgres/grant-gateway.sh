#!/bin/sh
# Lets the gateway read the revocation list auth publishes, and nothing else of auth's;
# and seals the audit tables: auth.auth_events and media.audit_events (with their guard
# and purge functions) move to the superuser, their service roles keep only INSERT and
# SELECT (and EXECUTE on the purge); auth.auth_event_repeats, the counts of repeated
# failures, likewise, with UPDATE of the count and DELETE, which its guard lets only grow a
# count or drop one whose record is gone; and an event trigger refuses any drop of them by
# anyone but a superuser. The same rules as deploy/roles.py seal_audit_tables.
# Run by the one-shot `db-grants` service after auth and media report healthy (their
# migrations have created these objects); safe to run again.
set -eu
PGPASSWORD="$(cat "${SECRETS_DIR:-/run/secrets}/postgres_password")"
export PGPASSWORD
# keep-audit.sql lies beside this script (compose mounts both at /).
psql -v ON_ERROR_STOP=1 -v keep_audit="$(dirname "$0")/keep-audit.sql" \
    --host "${PGHOST:-postgres}" --username "${PGUSER:-postgres}" \
    --dbname "${PGDATABASE:-tempo}" <<'SQL'
GRANT USAGE ON SCHEMA auth TO tempo_gateway;
GRANT SELECT ON auth.revoked_tokens TO tempo_gateway;

BEGIN;
ALTER TABLE auth.auth_events OWNER TO CURRENT_USER;
ALTER FUNCTION auth.guard_audit() OWNER TO CURRENT_USER;
ALTER FUNCTION auth.purge_audit(integer) OWNER TO CURRENT_USER;
REVOKE ALL ON auth.auth_events FROM PUBLIC, tempo_auth;
GRANT SELECT, INSERT ON auth.auth_events TO tempo_auth;
REVOKE ALL ON FUNCTION auth.purge_audit(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.purge_audit(integer) TO tempo_auth;

ALTER TABLE auth.auth_event_repeats OWNER TO CURRENT_USER;
ALTER FUNCTION auth.guard_audit_repeats() OWNER TO CURRENT_USER;
REVOKE ALL ON auth.auth_event_repeats FROM PUBLIC, tempo_auth;
GRANT SELECT, INSERT, DELETE, UPDATE (repeats) ON auth.auth_event_repeats TO tempo_auth;

ALTER TABLE media.audit_events OWNER TO CURRENT_USER;
ALTER FUNCTION media.guard_audit() OWNER TO CURRENT_USER;
ALTER FUNCTION media.purge_audit(integer) OWNER TO CURRENT_USER;
REVOKE ALL ON media.audit_events FROM PUBLIC, tempo_media;
GRANT SELECT, INSERT ON media.audit_events TO tempo_media;
REVOKE ALL ON FUNCTION media.purge_audit(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION media.purge_audit(integer) TO tempo_media;

\i :keep_audit
DROP EVENT TRIGGER IF EXISTS tempo_keep_audit;
CREATE EVENT TRIGGER tempo_keep_audit ON sql_drop
    EXECUTE FUNCTION public.tempo_keep_audit();
COMMIT;
SQL
