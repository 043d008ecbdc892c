//! Shared helpers for the celery-cnc benchmarks.
