-- Bulk imports of whole archives, and the activities they bring in.
-- An import's uploaded archive lives at <root>/.imports/<owner_id>/<id>.zip until it
-- has been processed; an activity's file at <root>/.activities/<owner_id>/<id>.
CREATE TABLE media.imports (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'processing', 'done', 'failed', 'cancelled')),
    -- What the archive turned out to be: a Strava export or this service's own export.
    kind text CHECK (kind IN ('strava', 'tempo')),
    archive_bytes bigint NOT NULL CHECK (archive_bytes > 0),
    archive_present boolean NOT NULL DEFAULT true,
    entries_total integer NOT NULL DEFAULT 0,
    entries_done integer NOT NULL DEFAULT 0,
    bytes_total bigint NOT NULL DEFAULT 0,
    bytes_done bigint NOT NULL DEFAULT 0,
    activities_found integer NOT NULL DEFAULT 0,
    activities_imported integer NOT NULL DEFAULT 0,
    skipped_not_run integer NOT NULL DEFAULT 0,
    skipped_duplicate integer NOT NULL DEFAULT 0,
    skipped_missing_file integer NOT NULL DEFAULT 0,
    skipped_invalid integer NOT NULL DEFAULT 0,
    media_imported integer NOT NULL DEFAULT 0,
    -- The first errors in full, and how many more there were.
    errors jsonb NOT NULL DEFAULT '[]'::jsonb,
    errors_omitted integer NOT NULL DEFAULT 0,
    -- How many times processing has started; bounds resuming after restarts.
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at timestamptz,
    finished_at timestamptz,
    -- Refreshed while processing; a stale one means the worker died.
    heartbeat_at timestamptz
);

-- One running import per user, even with several service replicas.
CREATE UNIQUE INDEX imports_one_processing_per_owner ON media.imports (owner_id)
    WHERE status = 'processing';
CREATE INDEX imports_owner_created_idx ON media.imports (owner_id, created_at DESC, id DESC);
CREATE INDEX imports_queued_idx ON media.imports (created_at) WHERE status = 'queued';

CREATE TABLE media.activities (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    strava_id text NOT NULL CHECK (strava_id ~ '^[0-9]{1,20}$'),
    import_id uuid REFERENCES media.imports (id) ON DELETE SET NULL,
    started_at timestamptz,
    name text NOT NULL DEFAULT '' CHECK (char_length(name) <= 500),
    activity_type text NOT NULL CHECK (char_length(activity_type) BETWEEN 1 AND 64),
    distance_meters double precision CHECK (distance_meters >= 0),
    elapsed_seconds integer CHECK (elapsed_seconds >= 0),
    -- The activity file, when the activity has one (manual entries do not).
    file_format text CHECK (file_format IN ('gpx', 'gpx.gz', 'tcx', 'tcx.gz', 'fit', 'fit.gz')),
    filename text CHECK (char_length(filename) BETWEEN 1 AND 255),
    size_bytes bigint CHECK (size_bytes > 0),
    sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    broken_at timestamptz,
    broken_reason text,
    UNIQUE (owner_id, strava_id),
    CHECK ((file_format IS NULL) = (sha256 IS NULL)
           AND (sha256 IS NULL) = (size_bytes IS NULL)
           AND (sha256 IS NULL) = (filename IS NULL))
);

CREATE UNIQUE INDEX activities_owner_sha256_idx ON media.activities (owner_id, sha256)
    WHERE sha256 IS NOT NULL;
CREATE INDEX activities_owner_started_idx ON media.activities (owner_id, started_at DESC);

-- Which media items an import created, so that a resumed import counts them as its own
-- rather than as duplicates, and an export can say where they came from.
CREATE TABLE media.import_media (
    import_id uuid NOT NULL REFERENCES media.imports (id) ON DELETE CASCADE,
    media_id uuid NOT NULL REFERENCES media.media (id) ON DELETE CASCADE,
    PRIMARY KEY (import_id, media_id)
);
CREATE INDEX import_media_media_idx ON media.import_media (media_id);
