//! celery-cnc broker layer (being written).
