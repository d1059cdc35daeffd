"""tokenway.sim."""
