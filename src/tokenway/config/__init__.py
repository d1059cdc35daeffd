"""tokenway.config."""
