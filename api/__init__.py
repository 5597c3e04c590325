"""gridgov's HTTP service (FastAPI): thin routes over the core and the store."""
