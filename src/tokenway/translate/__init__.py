"""tokenway.translate."""
