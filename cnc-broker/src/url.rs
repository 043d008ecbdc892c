//! Broker URLs: which adapter a URL selects, and how to print it safely.

use crate::error::{BrokerError, BrokerResult, ErrorKind};

/// The broker family a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `redis://` or `rediss://` (TLS).
    Redis {
        /// `rediss://`.
        tls: bool,
    },
    /// `amqp://` or `amqps://` (TLS).
    Amqp {
        /// `amqps://`.
        tls: bool,
    },
    /// `memory://`: the in-process broker.
    Memory,
    /// `db+sqlite://`, `db+postgresql://`: Celery's database result backend
    /// (a result backend only, never a broker).
    Database {
        /// Which database.
        dialect: DbDialect,
    },
}

/// The database behind a `db+…` result backend URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DbDialect {
    /// `db+sqlite://`.
    Sqlite,
    /// `db+postgresql://` (also `db+postgres://`, `db+postgresql+psycopg2://`).
    Postgres,
}

impl DbDialect {
    /// The cnc-broker cargo feature that reads this dialect.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Sqlite => "db-sqlite",
            Self::Postgres => "db-postgres",
        }
    }
}

impl Scheme {
    /// Parse the scheme of `url`. Never panics: an unknown or missing scheme
    /// is an [`ErrorKind::InvalidUrl`] error naming the scheme only.
    pub fn of(url: &str) -> BrokerResult<Self> {
        let Some((scheme, _)) = url.split_once("://") else {
            return Err(BrokerError::new(
                ErrorKind::InvalidUrl,
                format!("not a URL: {}", redact(url)),
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => Ok(Self::Redis { tls: false }),
            "rediss" => Ok(Self::Redis { tls: true }),
            "amqp" | "pyamqp" => Ok(Self::Amqp { tls: false }),
            "amqps" => Ok(Self::Amqp { tls: true }),
            "memory" => Ok(Self::Memory),
            s if s.starts_with("db+") => {
                // `db+postgresql+psycopg2`: the dialect, then SQLAlchemy's driver.
                match s[3..].split('+').next().unwrap_or("") {
                    "sqlite" => Ok(Self::Database {
                        dialect: DbDialect::Sqlite,
                    }),
                    "postgresql" | "postgres" => Ok(Self::Database {
                        dialect: DbDialect::Postgres,
                    }),
                    other => Err(BrokerError::new(
                        ErrorKind::InvalidUrl,
                        format!(
                            "unsupported database backend {other:?} (expected db+sqlite or db+postgresql)"
                        ),
                    )),
                }
            }
            other => Err(BrokerError::new(
                ErrorKind::InvalidUrl,
                format!(
                    "unknown scheme {other:?} (expected redis, rediss, amqp, amqps, memory, db+sqlite or db+postgresql)"
                ),
            )),
        }
    }
}

/// `url` with any password replaced by `***`
/// (`redis://:secret@h/0` -> `redis://:***@h/0`). Safe for logs, errors and
/// `Debug` output; unparseable input is returned with everything between
/// `://` and the last `@` hidden.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first '/', '?' or '#'; userinfo at its last '@'.
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let tail = redact_query_password(tail);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// `?password=x` (libpq-style URLs) hidden as `?password=***`.
fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// The Redis database number in a `redis://host:port/N` URL (0 when absent).
pub fn redis_db(url: &str) -> BrokerResult<u32> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = match rest.find('/') {
        Some(i) => &rest[i + 1..],
        None => return Ok(0),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return Ok(0);
    }
    path.parse().map_err(|_| {
        BrokerError::new(
            ErrorKind::InvalidUrl,
            format!("bad Redis db number in {}", redact(url)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            Scheme::of("redis://h/0").ok(),
            Some(Scheme::Redis { tls: false })
        );
        assert_eq!(
            Scheme::of("rediss://h/0").ok(),
            Some(Scheme::Redis { tls: true })
        );
        assert_eq!(
            Scheme::of("amqp://h//").ok(),
            Some(Scheme::Amqp { tls: false })
        );
        assert_eq!(
            Scheme::of("AMQPS://h").ok(),
            Some(Scheme::Amqp { tls: true })
        );
        assert_eq!(Scheme::of("memory://").ok(), Some(Scheme::Memory));
        let e = Scheme::of("sqs://key:secret@x")
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("sqs") && !e.contains("secret"))
        );
        assert!(Scheme::of("nonsense").is_err());
        assert!(Scheme::of("").is_err());
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact("amqp://guest:guest@h:5672/vh"),
            "amqp://guest:***@h:5672/vh"
        );
        assert_eq!(redact("amqp://token@h"), "amqp://***@h");
        assert_eq!(redact("amqp://u:p@ss@h/x@y"), "amqp://u:***@h/x@y");
        assert_eq!(redact("redis://h/0"), "redis://h/0");
        assert_eq!(redact("memory://"), "memory://");
        assert_eq!(
            redact("db+postgresql://u:pw@h/db?password=pw&x=1"),
            "db+postgresql://u:***@h/db?password=***&x=1"
        );
        assert_eq!(redact("db+sqlite:////tmp/r.db"), "db+sqlite:////tmp/r.db");
    }

    #[test]
    fn database_schemes() {
        assert_eq!(
            Scheme::of("db+sqlite:///r.db").ok(),
            Some(Scheme::Database {
                dialect: DbDialect::Sqlite
            })
        );
        assert_eq!(
            Scheme::of("db+postgresql+psycopg2://u@h/d").ok(),
            Some(Scheme::Database {
                dialect: DbDialect::Postgres
            })
        );
        let e = Scheme::of("db+mysql://u:secret@h/d")
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("mysql") && !e.contains("secret"))
        );
    }

    #[test]
    fn db_numbers() {
        assert_eq!(redis_db("redis://h:6379/3").ok(), Some(3));
        assert_eq!(redis_db("redis://h:6379").ok(), Some(0));
        assert_eq!(redis_db("redis://h:6379/").ok(), Some(0));
        assert_eq!(redis_db("redis://h/5?x=1").ok(), Some(5));
        assert!(redis_db("redis://:pw@h/x").is_err());
    }
}
