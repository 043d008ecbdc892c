//! celery-cnc exporters (being built).
