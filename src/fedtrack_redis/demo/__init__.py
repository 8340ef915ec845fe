"""`fedtrack demo`: a simulated cluster (workers, flusher, dashboard) on throwaway services."""
