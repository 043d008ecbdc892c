//! The service configuration from the command line: the flags of `run` and
//! `check-config`, layered over the file and the environment with
//! [`ConfigLoader`] (defaults < `--config` file < `CELERY_CNC__*` < flags).

use std::path::PathBuf;

use clap::Args;
use cnc_core::config::{CeleryCncConfig, ConfigErrors, ConfigLoader};
use toml::{Table, Value};

use crate::exit::{CmdResult, Failure};

/// Flags that set the service configuration.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// A TOML config file (see `celery-cnc gen-config`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Broker URL of a Celery app to watch (`redis://host:6379/0`,
    /// `amqp://user:pass@host:5672//`); repeat for several. Replaces the
    /// file's `[[apps]]`; each becomes an app named after its host and
    /// db/vhost.
    #[arg(long = "broker", value_name = "URL")]
    pub brokers: Vec<String>,
    /// Result backend URL of the apps given with `--broker`.
    #[arg(long, value_name = "URL", requires = "brokers")]
    pub backend: Option<String>,
    /// The store: a SQLite file path, `sqlite://PATH`, `postgres://…` or
    /// `memory://`.
    #[arg(long, value_name = "PATH|URL")]
    pub db: Option<String>,
    /// Delete the stored history on start.
    #[arg(long)]
    pub purge_db: bool,
    /// Address the web UI binds.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<String>,
    /// Port of the web UI.
    #[arg(long)]
    pub port: Option<u16>,
    /// HTTP basic auth for the web UI, `user:password` (other users of the
    /// machine can read flags: prefer `CELERY_CNC__FRONTEND__BASIC_AUTH`).
    #[arg(long, value_name = "USER:PASS")]
    pub basic_auth: Option<String>,
    /// No web UI.
    #[arg(long, conflicts_with_all = ["host", "port", "basic_auth"])]
    pub no_web: bool,
    /// Serve Prometheus metrics on `[HOST:]PORT`.
    #[arg(long, value_name = "[HOST:]PORT", value_parser = parse_listen)]
    pub prometheus: Option<(Option<String>, u16)>,
    /// Export to this OpenTelemetry (OTLP) endpoint, `http://host:4317`.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Events per write batch.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
    /// Longest wait before a partial batch is written (`100ms`, `1s`).
    #[arg(long, value_name = "DURATION")]
    pub batch_interval: Option<String>,
}

fn parse_listen(text: &str) -> Result<(Option<String>, u16), String> {
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (Some(h.trim_matches(['[', ']']).to_owned()), p),
        None => (None, text),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` is not a port number"))?;
    if host.as_deref() == Some("") {
        return Err("empty host".into());
    }
    Ok((host, port))
}

impl ConfigArgs {
    /// The flags as one config layer.
    pub fn layer(&self) -> Table {
        let mut root = Table::new();
        if !self.brokers.is_empty() {
            let names = app_names(&self.brokers);
            let apps = self
                .brokers
                .iter()
                .zip(names)
                .map(|(url, name)| {
                    let mut app = Table::new();
                    app.insert("name".into(), Value::String(name));
                    app.insert("broker_url".into(), Value::String(url.clone()));
                    if let Some(b) = &self.backend {
                        app.insert("result_backend".into(), Value::String(b.clone()));
                    }
                    Value::Table(app)
                })
                .collect();
            root.insert("apps".into(), Value::Array(apps));
        }
        let mut section = |name: &str, key: &str, value: Value| {
            let entry = root
                .entry(name.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(t) = entry {
                t.insert(key.to_owned(), value);
            }
        };
        if let Some(db) = &self.db {
            section("database", "url", Value::String(db.clone()));
        }
        if self.purge_db {
            section("database", "purge_db", Value::Boolean(true));
        }
        if let Some(h) = &self.host {
            section("frontend", "host", Value::String(h.clone()));
        }
        if let Some(p) = self.port {
            section("frontend", "port", Value::Integer(i64::from(p)));
        }
        if let Some(a) = &self.basic_auth {
            section("frontend", "basic_auth", Value::String(a.clone()));
        }
        if let Some((host, port)) = &self.prometheus {
            section("prometheus", "port", Value::Integer(i64::from(*port)));
            if let Some(h) = host {
                section("prometheus", "host", Value::String(h.clone()));
            }
        }
        if let Some(e) = &self.otlp_endpoint {
            section("open_telemetry", "endpoint", Value::String(e.clone()));
        }
        if let Some(n) = self.batch_size {
            section("ingest", "batch_size", Value::Integer(i64::from(n)));
        }
        if let Some(i) = &self.batch_interval {
            section("ingest", "batch_interval", Value::String(i.clone()));
        }
        if self.no_web {
            root.insert("frontend".into(), Value::Boolean(false));
        }
        root
    }

    /// Load the layered config; every error at once.
    pub fn load(&self) -> Result<CeleryCncConfig, ConfigErrors> {
        self.load_with_env(std::env::vars())
    }

    /// [`Self::load`] with an explicit environment (tests).
    pub fn load_with_env(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<CeleryCncConfig, ConfigErrors> {
        let mut loader = ConfigLoader::new();
        if let Some(path) = &self.config {
            loader = loader.file(path);
        }
        loader.env(env).layer("flags", self.layer()).load()
    }

    /// The config `run` uses: loaded, and with at least one app.
    pub fn load_for_run(&self) -> CmdResult<CeleryCncConfig> {
        let cfg = self.load().map_err(config_failure)?;
        if cfg.apps.is_empty() {
            return Err(Failure::usage(
                "nothing to watch: pass --broker URL or add an [[apps]] table to the config file",
            ));
        }
        Ok(cfg)
    }
}

/// Configuration errors: exit 2, every error listed.
pub fn config_failure(errors: ConfigErrors) -> Failure {
    Failure::usage(errors.to_string())
}

/// `check-config`: print the effective config (passwords hidden) or every
/// error.
pub fn check_config(args: &ConfigArgs, json: bool) -> CmdResult {
    let cfg = args.load_for_run()?;
    let shown = cfg.redacted();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        let text = toml::to_string(&shown)
            .map_err(|e| Failure::runtime(format!("cannot print the config: {e}")))?;
        let off: Vec<&str> = [
            ("logging", shown.logging.is_none()),
            ("beat", shown.beat.is_none()),
            ("prometheus", shown.prometheus.is_none()),
            ("open_telemetry", shown.open_telemetry.is_none()),
            ("frontend", shown.frontend.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, is_off)| is_off.then_some(name))
        .collect();
        println!("# The configuration is valid; passwords are hidden.");
        if !off.is_empty() {
            println!("# Off: {}.", off.join(", "));
        }
        for note in missing_features(&shown) {
            println!("# Note: {note}");
        }
        print!("{text}");
    }
    Ok(())
}

/// Sections that are on but whose component this build does not contain
/// (the service then logs the same and runs without them).
fn missing_features(cfg: &CeleryCncConfig) -> Vec<&'static str> {
    let mut notes = Vec::new();
    if cfg!(not(feature = "web")) && cfg.frontend.is_some() {
        notes.push("this build has no web UI (cargo feature `web`): [frontend] is ignored.");
    }
    if cfg!(not(feature = "metrics")) && (cfg.prometheus.is_some() || cfg.open_telemetry.is_some())
    {
        notes.push(
            "this build has no exporters (cargo feature `metrics`): [prometheus] and [open_telemetry] are ignored.",
        );
    }
    notes
}

/// App names for broker URLs: `host/db` (`127.0.0.1/0`) or `host/vhost`,
/// and `app1..n` for all of them when those would not be unique.
pub fn app_names(urls: &[String]) -> Vec<String> {
    let named: Vec<Option<String>> = urls.iter().map(|u| name_from_url(u)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let unique = named
        .iter()
        .all(|n| n.as_ref().is_some_and(|n| seen.insert(n.clone())));
    if unique {
        named.into_iter().flatten().collect()
    } else {
        (1..=urls.len()).map(|i| format!("app{i}")).collect()
    }
}

fn name_from_url(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    if host.is_empty() {
        return None;
    }
    let path = tail
        .strip_prefix('/')
        .unwrap_or(tail)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    Some(match path {
        "" | "/" | "%2F" | "%2f" => host.to_owned(),
        p => format!("{host}/{p}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(f: impl FnOnce(&mut ConfigArgs)) -> ConfigArgs {
        let mut a = ConfigArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn app_names_from_urls() {
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            app_names(&urls(&[
                "redis://127.0.0.1:6379/0",
                "amqp://guest:secret@rabbit:5672//",
                "amqp://u:p@rabbit/prod"
            ])),
            ["127.0.0.1/0", "rabbit", "rabbit/prod"]
        );
        assert_eq!(
            app_names(&urls(&["redis://a:1/0", "redis://a:2/0"])),
            ["app1", "app2"]
        );
        assert_eq!(app_names(&urls(&["nonsense"])), ["app1"]);
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("cnc.toml");
        std::fs::write(
            &file,
            "[frontend]\nport = 7000\nhost = \"0.0.0.0\"\n[database]\nurl = \"file.db\"\n\
             [[apps]]\nname = \"file\"\nbroker_url = \"redis://file/0\"\n",
        )
        .expect("write");
        let env = vec![
            ("CELERY_CNC__FRONTEND__PORT".to_owned(), "7100".to_owned()),
            ("CELERY_CNC__DATABASE__URL".to_owned(), "env.db".to_owned()),
        ];
        let a = args(|a| {
            a.config = Some(file.clone());
            a.db = Some("memory://".into());
            a.batch_interval = Some("250ms".into());
            a.prometheus = Some((None, 9100));
        });
        let cfg = a.load_with_env(env.clone()).expect("valid");
        let web = cfg.frontend.clone().expect("web on");
        assert_eq!((web.host.as_str(), web.port), ("0.0.0.0", 7100));
        assert_eq!(cfg.database.url, "memory://");
        assert_eq!(cfg.apps[0].name, "file");
        assert_eq!(cfg.ingest.batch_interval, Duration::from_millis(250));
        assert_eq!(cfg.prometheus.map(|p| p.port), Some(9100));

        let a = args(|a| {
            a.config = Some(file.clone());
            a.brokers = vec!["redis://127.0.0.1:6379/3".into()];
            a.backend = Some("redis://127.0.0.1:6379/4".into());
            a.port = Some(9000);
            a.host = Some("0.0.0.0".into());
            a.basic_auth = Some("admin:pw".into());
            a.purge_db = true;
            a.otlp_endpoint = Some("http://collector:4317".into());
            a.batch_size = Some(500);
        });
        let cfg = a.load_with_env(env).expect("valid");
        assert_eq!(cfg.apps.len(), 1);
        assert_eq!(cfg.apps[0].name, "127.0.0.1/3");
        assert_eq!(
            cfg.apps[0].result_backend.as_deref(),
            Some("redis://127.0.0.1:6379/4")
        );
        let web = cfg.frontend.clone().expect("web on");
        assert_eq!((web.host.as_str(), web.port), ("0.0.0.0", 9000));
        assert_eq!(web.basic_auth.as_deref(), Some("admin:pw"));
        assert_eq!(
            cfg.open_telemetry.map(|o| o.endpoint).as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(cfg.ingest.batch_size, 500);
        assert!(cfg.database.purge_db);
        assert_eq!(cfg.database.url, "env.db");
    }

    #[test]
    fn no_web_turns_the_frontend_off_and_errors_come_together() {
        let a = args(|a| {
            a.brokers = vec!["redis://h/0".into()];
            a.no_web = true;
        });
        assert!(a.load_with_env(vec![]).expect("valid").frontend.is_none());
        let a = args(|a| {
            a.brokers = vec!["ftp://h/0".into()];
            a.batch_size = Some(0);
            a.db = Some("mysql://x".into());
        });
        let errs = a.load_with_env(vec![]).expect_err("invalid");
        assert_eq!(errs.0.len(), 3, "{errs}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("9100"), Ok((None, 9100)));
        assert_eq!(
            parse_listen("0.0.0.0:9100"),
            Ok((Some("0.0.0.0".into()), 9100))
        );
        assert!(parse_listen("x:y").is_err());
    }
}
