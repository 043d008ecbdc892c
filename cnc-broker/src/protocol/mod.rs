//! Celery 5 wire protocol (being written).
