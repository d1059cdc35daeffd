"""tokenway.gateway."""
