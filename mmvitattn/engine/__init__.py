"""Training-time machinery: hooks."""
