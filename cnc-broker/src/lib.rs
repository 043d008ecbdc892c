//! # cnc-broker: Celery over the wire
//!
//! * [`protocol`]: the Celery 5 wire format as pure data and codecs (no I/O).
//! * Broker adapters (features `redis`, `amqp`, `memory`).

pub mod protocol;
