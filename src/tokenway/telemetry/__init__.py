"""tokenway.telemetry."""
