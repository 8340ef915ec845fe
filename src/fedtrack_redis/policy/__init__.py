"""Federation policy: the database store, the per-process hot cache, and their sync."""
