//! # cnc-broker: Celery over the wire
//!
//! * [`protocol`]: the Celery 5 wire format as pure data and codecs (no I/O).
//! * [`Broker`] and [`ResultBackend`]: the dyn-safe adapter contract, with
//!   adapters for Redis ([`redis`], feature `redis`, via fred), RabbitMQ
//!   ([`amqp`], feature `amqp`, via lapin) and an in-process broker
//!   ([`memory`], feature `memory`) for tests of the code above this layer.
//! * [`db`]: Celery's database result backend (SQLAlchemy tables) read from
//!   SQLite (feature `db-sqlite`) and PostgreSQL (feature `db-postgres`).
//! * [`control`]: a typed remote-control client over any broker.
//! * [`stream`]: event streams that never block the socket reader (bounded
//!   hand-off, drop and count), and the reconnecting wrapper.
//! * [`backoff`]: the one capped exponential backoff helper.
//!
//! Design choices, and why:
//!
//! * Adapters move [`protocol::Message`]s; the protocol module alone knows
//!   what the bytes mean. The trait is small so third-party adapters are
//!   easy to write, and the typed control verbs live once, above it.
//! * A lost connection ends an event stream with a temporary error instead
//!   of reconnecting silently inside the driver: Celery events are not
//!   stored by the broker, so a gap is real and callers should see it.
//! * URLs are only ever printed through [`url::redact`]; driver errors are
//!   attached as `source` and never part of a public type.

pub mod api;
pub mod app;
pub mod backoff;
pub mod control;
pub mod db;
pub mod error;
pub mod protocol;
pub mod stream;
pub mod url;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::sync::Arc;

pub use api::{
    BroadcastOptions, Broker, BrokerKind, Capabilities, PurgeFilter, QueueDepth, ResultBackend,
    TaskResult, WorkerReply,
};
pub use app::AppConnection;
pub use backoff::Backoff;
pub use control::{ControlClient, Target};
pub use error::{BrokerError, BrokerResult, ErrorKind};
pub use stream::{
    EventStream, EventStreamOptions, ReconnectingStream, StreamCounters, StreamStats, reconnecting,
};

/// Options for [`connect`] beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Redis `global_keyprefix` transport option.
    pub key_prefix: String,
    /// AMQP: a name for the connection, shown by RabbitMQ
    /// (`connection_name`).
    pub connection_name: Option<String>,
}

/// Connect to the broker named by `url`. An unknown scheme, or one whose
/// cargo feature is off, is an error, never a panic.
pub async fn connect(url: &str, opts: BrokerOptions) -> BrokerResult<Arc<dyn Broker>> {
    let _ = &opts;
    match url::Scheme::of(url)? {
        #[cfg(feature = "redis")]
        url::Scheme::Redis { .. } => Ok(Arc::new(
            redis::RedisBroker::connect(
                url,
                redis::RedisOptions {
                    key_prefix: opts.key_prefix,
                },
            )
            .await?,
        )),
        #[cfg(feature = "amqp")]
        url::Scheme::Amqp { .. } => Ok(Arc::new(
            amqp::AmqpBroker::connect(
                url,
                amqp::AmqpOptions {
                    connection_name: opts.connection_name,
                },
            )
            .await?,
        )),
        #[cfg(feature = "memory")]
        url::Scheme::Memory => Ok(Arc::new(memory::MemoryBroker::new())),
        url::Scheme::Database { .. } => Err(BrokerError::invalid_input(format!(
            "{} is a result backend URL, not a broker",
            url::redact(url)
        ))),
        #[allow(unreachable_patterns)]
        other => Err(BrokerError::unsupported(format!(
            "broker {other:?} is not compiled in (enable its cargo feature)"
        ))),
    }
}

/// Connect to the result backend named by `url`: `redis://`,
/// `db+sqlite:///path`, `db+postgresql://…` (see [`db`]) or `memory://`.
pub async fn connect_backend(url: &str) -> BrokerResult<Arc<dyn ResultBackend>> {
    match url::Scheme::of(url) {
        #[cfg(feature = "db-sqlite")]
        Ok(url::Scheme::Database {
            dialect: url::DbDialect::Sqlite,
        }) => Ok(Arc::new(db::sqlite::SqliteResultBackend::from_url(url)?)),
        #[cfg(feature = "db-postgres")]
        Ok(url::Scheme::Database {
            dialect: url::DbDialect::Postgres,
        }) => Ok(Arc::new(
            db::postgres::PostgresResultBackend::connect(url).await?,
        )),
        #[allow(unreachable_patterns)]
        Ok(url::Scheme::Database { dialect }) => Err(BrokerError::unsupported(format!(
            "result backend {} needs cargo feature {} of cnc-broker",
            url::redact(url),
            dialect.feature()
        ))),
        #[cfg(feature = "redis")]
        Ok(url::Scheme::Redis { .. }) => {
            Ok(Arc::new(redis::RedisResultBackend::connect(url).await?))
        }
        #[cfg(feature = "memory")]
        Ok(url::Scheme::Memory) => Ok(Arc::new(memory::MemoryBackend::default())),
        _ => Err(BrokerError::unsupported(format!(
            "result backend {} is not supported",
            url::redact(url)
        ))),
    }
}
