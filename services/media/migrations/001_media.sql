-- Photos and videos. A row exists only once its file is in place under
-- <root>/<owner_id>/<id>; the file is removed after the row.
CREATE TABLE media.media (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    filename text NOT NULL CHECK (char_length(filename) BETWEEN 1 AND 255),
    mime_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    workout_id text CHECK (workout_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
    caption text CHECK (char_length(caption) <= 2000),
    width integer CHECK (width > 0),
    height integer CHECK (height > 0),
    -- clock_timestamp, not now(): items inserted in one transaction still sort apart.
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set by fsck --repair when the file is missing or does not match the row.
    broken_at timestamptz,
    broken_reason text
);

CREATE INDEX media_owner_created_idx ON media.media (owner_id, created_at DESC, id DESC);
CREATE INDEX media_owner_workout_idx ON media.media (owner_id, workout_id, created_at DESC, id DESC)
    WHERE workout_id IS NOT NULL;
CREATE INDEX media_owner_sha256_idx ON media.media (owner_id, sha256);
