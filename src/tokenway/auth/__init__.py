"""tokenway.auth."""
