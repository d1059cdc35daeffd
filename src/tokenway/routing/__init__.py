"""Which targets a request may go to, and in which order: filters, then a policy."""
