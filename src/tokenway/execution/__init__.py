"""tokenway.execution."""
