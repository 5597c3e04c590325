"""Routers of the native API (/api/v1) and the health checks."""
