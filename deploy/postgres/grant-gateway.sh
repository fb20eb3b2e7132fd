#!/bin/sh
# Lets the gateway read the revocation list auth publishes, and nothing else of auth's.
# Run by the one-shot `db-grants` service after auth reports healthy (its migrations have
# created auth.revoked_tokens); safe to run again.
set -eu
PGPASSWORD="$(cat "${SECRETS_DIR:-/run/secrets}/postgres_password")"
export PGPASSWORD
psql -v ON_ERROR_STOP=1 --host "${PGHOST:-postgres}" --username "${PGUSER:-postgres}" \
    --dbname "${PGDATABASE:-tempo}" <<'SQL'
GRANT USAGE ON SCHEMA auth TO tempo_gateway;
GRANT SELECT ON auth.revoked_tokens TO tempo_gateway;
SQL
