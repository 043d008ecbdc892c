//! How a command fails: one readable line and a documented exit code.
//!
//! Every command returns `Result<(), Failure>`; `main` prints the message
//! once, prefixed with `celery-cnc: `, and exits with the code. Library
//! errors (`anyhow`, broker and store errors) become runtime failures with
//! their whole chain on one line; messages never contain passwords because
//! URLs are only ever shown through [`cnc_broker::url::redact`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cnc_broker::{Broker, BrokerError, BrokerOptions, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// A runtime failure: the broker, the backend or the store failed, or a
/// worker answered with an error.
pub const RUNTIME: u8 = 1;
/// Bad usage or an invalid configuration (also clap's own code).
pub const USAGE: u8 = 2;
/// Nothing to show: no worker replied, the result or the event count was
/// not there in time.
pub const NOTHING: u8 = 3;

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    /// Exit code, one of the constants above.
    pub code: u8,
    /// What went wrong, possibly several lines (configuration errors).
    pub message: String,
}

impl Failure {
    /// Exit 1.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: RUNTIME,
            message: message.into(),
        }
    }

    /// Exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    /// Exit 3.
    pub fn nothing(message: impl Into<String>) -> Self {
        Self {
            code: NOTHING,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::runtime(format!("{err:#}"))
    }
}

impl From<std::io::Error> for Failure {
    /// A closed stdout (`celery-cnc events | head`) is a quiet success.
    fn from(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            return Self {
                code: OK,
                message: String::new(),
            };
        }
        Self::runtime(err.to_string())
    }
}

impl From<serde_json::Error> for Failure {
    fn from(err: serde_json::Error) -> Self {
        Self::runtime(err.to_string())
    }
}

/// The result of a command.
pub type CmdResult<T = ()> = Result<T, Failure>;

/// Connect to `url` and check it answers, within `timeout`. Failures are
/// one line: `cannot reach broker redis://127.0.0.1:1/0: connection refused`
/// (exit 1), or a usage error for a URL that is not a broker URL (exit 2).
pub async fn connect_broker(url: &str, timeout: Duration) -> CmdResult<Arc<dyn Broker>> {
    if url.trim().is_empty() {
        return Err(Failure::usage(
            "no broker URL: pass --broker URL or set CELERY_CNC_BROKER",
        ));
    }
    let shown = cnc_broker::url::redact(url);
    let attempt = async {
        let broker = cnc_broker::connect(
            url,
            BrokerOptions {
                connection_name: Some("celery-cnc cli".into()),
                ..BrokerOptions::default()
            },
        )
        .await?;
        broker.healthcheck().await?;
        Ok::<_, BrokerError>(broker)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(broker)) => Ok(broker),
        Ok(Err(err)) => Err(broker_failure(&format!("broker {shown}"), &err)),
        Err(_) => Err(Failure::runtime(format!(
            "cannot reach broker {shown}: no answer within {}",
            seconds(timeout)
        ))),
    }
}

/// A failure for a connection-time broker or backend error: `what` is
/// `broker redis://…` or `result backend redis://…`.
pub fn broker_failure(what: &str, err: &BrokerError) -> Failure {
    match err.kind() {
        ErrorKind::InvalidUrl | ErrorKind::Unsupported | ErrorKind::InvalidInput => {
            Failure::usage(format!("{what}: {}", err.message()))
        }
        _ => Failure::runtime(format!("cannot reach {what}: {}", reason(err))),
    }
}

/// A failure of an operation on a connected broker.
pub fn op_failure(doing: &str, err: &BrokerError) -> Failure {
    Failure::runtime(format!("{doing}: {}", reason(err)))
}

/// The most telling cause of `err`, short: an I/O error's kind
/// (`connection refused`) when there is one in the chain, otherwise the
/// innermost message.
pub fn reason(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        let text = e.to_string();
        if let Some(kind) = io_kind_in_text(&text) {
            return kind.to_owned();
        }
        if !text.trim().is_empty() {
            innermost = text;
        }
        cur = e.source();
    }
    innermost
}

fn io_reason(io: &std::io::Error) -> String {
    match io.kind() {
        std::io::ErrorKind::Other => {
            let text = io.to_string();
            io_kind_in_text(&text).map_or(text, str::to_owned)
        }
        kind => kind.to_string(),
    }
}

/// Drivers often flatten I/O errors into text (`Connection refused (os
/// error 111)`); recognise the common ones.
fn io_kind_in_text(text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    [
        ("connection refused", "connection refused"),
        ("connection reset", "connection reset"),
        ("timed out", "timed out"),
        (
            "failed to lookup address",
            "host name could not be resolved",
        ),
        (
            "name or service not known",
            "host name could not be resolved",
        ),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network is unreachable"),
        ("access_refused", "access refused (check user and password)"),
        ("access refused", "access refused (check user and password)"),
        ("wrongpass", "access refused (check user and password)"),
        ("noauth", "authentication required"),
    ]
    .into_iter()
    .find(|(needle, _)| t.contains(needle))
    .map(|(_, shown)| shown)
}

/// `1s`, `2.5s`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

/// Parse a duration flag: plain seconds (`1`, `2.5`) or with a unit
/// (`500ms`, `30s`, `5m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 1, 2.5, 500ms, 30s, 5m)"))?;
    let factor = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (ms, s, m, h)")),
    };
    let secs = n * factor;
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert_eq!(seconds(Duration::from_secs(1)), "1s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn reasons_are_short() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = BrokerError::connection("connecting").with_source(io);
        assert_eq!(reason(&err), "connection refused");
        let text = BrokerError::connection("x").with_source(std::io::Error::other(
            "IO Error: Connection refused (os error 111)",
        ));
        assert_eq!(reason(&text), "connection refused");
    }
}
