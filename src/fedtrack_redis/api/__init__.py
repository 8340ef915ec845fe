"""The admin HTTP API and dashboard: a thin FastAPI layer over the library."""
