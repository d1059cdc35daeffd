"""tokenway.providers."""
