//! celery-cnc web UI (being built).
