"""Bulk import of a Strava export or of this service's own export."""
