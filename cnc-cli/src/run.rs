//! `celery-cnc run`: the service, [`cnc_core::CeleryCnc`], on the layered
//! configuration, until SIGINT/SIGTERM (which drains the event channel,
//! writes the last batch and closes the store).

use cnc_core::config::CeleryCncConfig;
use cnc_core::{CeleryCnc, CncError};

use crate::exit::{CmdResult, Failure, reason};

/// Run until SIGINT/SIGTERM.
pub async fn run(cfg: CeleryCncConfig) -> CmdResult {
    let brokers: Vec<String> = cfg
        .unique_brokers()
        .into_iter()
        .map(cnc_core::broker::url::redact)
        .collect();
    CeleryCnc::new(cfg)
        .run()
        .await
        .map_err(|e| failure(e, &brokers))
}

/// One line per failure; configuration errors are exit 2.
fn failure(err: CncError, brokers: &[String]) -> Failure {
    match err {
        CncError::Config(errors) => crate::config_cmd::config_failure(errors),
        CncError::Broker { url, source } => {
            // The same words as the one-shot commands.
            let what = if brokers.contains(&url) {
                "broker"
            } else {
                "result backend"
            };
            Failure::runtime(format!("cannot reach {what} {url}: {}", reason(&source)))
        }
        other => Failure::runtime(other.to_string()),
    }
}
