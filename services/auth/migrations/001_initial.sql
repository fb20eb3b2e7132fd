-- Users, the registration lock, sessions and their revocation feed, login throttling,
-- and the append-only audit log.

CREATE TABLE auth.users (
    id uuid PRIMARY KEY,
    username text NOT NULL CHECK (char_length(username) BETWEEN 1 AND 50),
    -- Case-folded, NFKC-normalised username: the form uniqueness is decided on.
    username_key text NOT NULL,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    -- Tempo is single-user: a unique column that can only hold true admits one row.
    single_user boolean NOT NULL DEFAULT true CHECK (single_user),
    CONSTRAINT users_single_user_key UNIQUE (single_user)
);
CREATE UNIQUE INDEX users_username_key_key ON auth.users (username_key);

-- The first registration takes this one-row lock and keeps it for good: even concurrent
-- registrations on an empty database cannot both insert it, and nothing ever removes it.
CREATE TABLE auth.registration_lock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    user_id uuid NOT NULL REFERENCES auth.users (id) DEFERRABLE INITIALLY DEFERRED,
    registered_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.sessions (
    id uuid PRIMARY KEY,
    jti text NOT NULL UNIQUE,
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_reason text,
    ip text,
    user_agent text
);
CREATE INDEX sessions_user_id_idx ON auth.sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON auth.sessions (expires_at);

-- What the gateway loads after (re)connecting: revoked tokens that would otherwise still
-- be accepted.
CREATE VIEW auth.revoked_tokens AS
    SELECT jti, expires_at
    FROM auth.sessions
    WHERE revoked_at IS NOT NULL AND expires_at > now();

-- A revocation is announced by the transaction that makes it: PostgreSQL delivers a
-- NOTIFY only when that transaction commits, and never if it rolls back, so listeners
-- can neither miss a committed revocation nor hear of one that did not happen.
CREATE FUNCTION auth.announce_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'tempo_revocations',
        jsonb_build_object(
            'jti', NEW.jti,
            'expiresAt', floor(extract(epoch FROM NEW.expires_at))::bigint
        )::text
    );
    RETURN NEW;
END
$$;

CREATE TRIGGER sessions_announce_revocation
    AFTER UPDATE OF revoked_at ON auth.sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION auth.announce_revocation();

-- Failed logins per username, kept here so a lockout holds across restarts and replicas.
CREATE TABLE auth.login_failures (
    username_key text PRIMARY KEY,
    failures integer NOT NULL DEFAULT 0,
    window_started_at timestamptz,
    locked_until timestamptz,
    lockouts integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.auth_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    event text NOT NULL,
    outcome text NOT NULL,
    user_id uuid,
    username text,
    ip text,
    user_agent text,
    request_id text,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX auth_events_occurred_at_idx ON auth.auth_events (occurred_at);

-- Append-only tables refuse to be rewritten, whoever asks.
CREATE FUNCTION auth.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER auth_events_append_only
    BEFORE UPDATE OR DELETE ON auth.auth_events
    FOR EACH ROW EXECUTE FUNCTION auth.refuse_change();
CREATE TRIGGER auth_events_no_truncate
    BEFORE TRUNCATE ON auth.auth_events
    FOR EACH STATEMENT EXECUTE FUNCTION auth.refuse_change();

CREATE TRIGGER registration_lock_append_only
    BEFORE UPDATE OR DELETE ON auth.registration_lock
    FOR EACH ROW EXECUTE FUNCTION auth.refuse_change();
CREATE TRIGGER registration_lock_no_truncate
    BEFORE TRUNCATE ON auth.registration_lock
    FOR EACH STATEMENT EXECUTE FUNCTION auth.refuse_change();
