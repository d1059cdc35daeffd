"""tokenway.accounting."""
