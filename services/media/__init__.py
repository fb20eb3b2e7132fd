"""The media service: streamed, content-checked uploads into PostgreSQL-tracked storage."""
