#!/bin/sh
# Runs once, when the official postgres image initialises an empty data directory.
# Gives each service its own login role with least privilege:
#   tempo_auth   owns schema auth (its tables, and the revocation view it publishes)
#   tempo_media  owns schema media
#   tempo_gateway may connect and LISTEN; SELECT on auth.revoked_tokens is granted by
#                 grant-gateway.sh once auth has created the view (its first migration).
#   tempo_restore what `python -m deploy.backup restore` connects as: it holds the schemas
#                 auth and media through their owners' roles and nothing else, so a
#                 restored dump runs with no more rights than the services have.
# Nobody else may connect; the public schema is closed. The superuser password is the
# generated one from POSTGRES_PASSWORD_FILE, never the image default.
set -eu

password() { cat "${SECRETS_DIR:-/run/secrets}/$1"; }

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTGRES_DB" \
    -v auth_pw="$(password db_auth_password)" \
    -v media_pw="$(password db_media_password)" \
    -v gateway_pw="$(password db_gateway_password)" \
    -v restore_pw="$(password db_restore_password)" <<'SQL'
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;

CREATE ROLE tempo_auth LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'auth_pw';
CREATE ROLE tempo_media LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'media_pw';
CREATE ROLE tempo_gateway LOGIN NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'gateway_pw' CONNECTION LIMIT 20;
CREATE ROLE tempo_restore LOGIN INHERIT NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'restore_pw' CONNECTION LIMIT 2;
GRANT tempo_auth, tempo_media TO tempo_restore;

GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO tempo_auth, tempo_media, tempo_gateway;
GRANT CONNECT ON DATABASE :"db" TO tempo_restore;
CREATE SCHEMA auth AUTHORIZATION tempo_auth;
CREATE SCHEMA media AUTHORIZATION tempo_media;
GRANT USAGE ON SCHEMA auth TO tempo_gateway;
SQL
