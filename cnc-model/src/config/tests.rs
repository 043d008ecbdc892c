use std::time::Duration;

use super::*;

#[test]
fn defaults_are_the_minimal_working_config() {
    let c = CeleryCncConfig::default();
    assert!(c.logging.is_some(), "file logging on");
    assert_eq!(
        c.database.backend(),
        Ok(DatabaseBackend::Sqlite("celery_cnc.db".into()))
    );
    let f = c.frontend.as_ref().expect("frontend on");
    assert_eq!((f.host.as_str(), f.port), ("127.0.0.1", 8000));
    assert!(c.beat.is_none() && c.prometheus.is_none() && c.open_telemetry.is_none());
    assert!(c.validate().is_ok());
}

#[test]
fn builder_matches_the_design_card() {
    let cfg = CeleryCncConfig::builder()
        .app(
            CeleryApp::new("orders", "redis://127.0.0.1:6379/0")
                .backend("redis://127.0.0.1:6379/1"),
        )
        .database(DatabaseConfig::sqlite("x.db"))
        .frontend(FrontendConfig::default())
        .prometheus(PrometheusConfig::default())
        .build()
        .expect("valid");
    assert_eq!(cfg.unique_brokers(), vec!["redis://127.0.0.1:6379/0"]);
    assert_eq!(cfg.prometheus.as_ref().map(|p| p.port), Some(8001));
}

#[test]
fn apps_sharing_a_broker_share_a_listener() {
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("a", "redis://h/0"))
        .app(CeleryApp::new("b", "amqp://guest:guest@h//"))
        .app(CeleryApp::new("c", "redis://h/0"))
        .build()
        .expect("valid");
    assert_eq!(
        cfg.unique_brokers(),
        vec!["redis://h/0", "amqp://guest:guest@h//"]
    );
}

#[test]
fn layers_override_in_order() {
    let file = r#"
        [[apps]]
        name = "orders"
        broker_url = "redis://127.0.0.1:6379/0"

        [frontend]
        port = 9000
        host = "0.0.0.0"

        [database]
        url = "sqlite:///tmp/a.db"
        retention = "7days"

        [ingest]
        batch_interval = "250ms"
    "#;
    let cfg = ConfigLoader::new()
        .toml_str("cnc.toml", file)
        .env([
            ("CELERY_CNC__FRONTEND__PORT".to_owned(), "9100".to_owned()),
            (
                "CELERY_CNC__DATABASE__URL".to_owned(),
                "postgres://u:p@h/db".to_owned(),
            ),
            ("UNRELATED".to_owned(), "1".to_owned()),
            ("CELERY_CNC__PROMETHEUS".to_owned(), "true".to_owned()),
        ])
        .set("frontend.port", 9200)
        .load()
        .expect("valid");
    let f = cfg.frontend.expect("on");
    assert_eq!(f.port, 9200, "flags beat env beat file");
    assert_eq!(f.host, "0.0.0.0", "file beats defaults");
    assert_eq!(cfg.database.url, "postgres://u:p@h/db");
    assert_eq!(cfg.database.retention, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(cfg.ingest.batch_interval, Duration::from_millis(250));
    assert_eq!(
        cfg.ingest.batch_size, 1000,
        "untouched fields keep defaults"
    );
    assert!(cfg.prometheus.is_some(), "`true` turns a section on");
}

#[test]
fn a_section_can_be_switched_off() {
    let cfg = ConfigLoader::new()
        .toml_str("t", "frontend = false\nlogging = false\n")
        .load()
        .expect("valid");
    assert!(cfg.frontend.is_none() && cfg.logging.is_none());
}

#[test]
fn every_error_is_reported_at_once() {
    let file = r#"
        surprise = 1

        [[apps]]
        name = "a"
        broker_url = "http://nope"

        [frontend]
        port = "eighty"

        [prometheus]
        colour = "red"

        [ingest]
        batch_size = 0
    "#;
    let errs = ConfigLoader::new()
        .toml_str("cnc.toml", file)
        .file(std::path::Path::new("/nonexistent/celery-cnc.toml"))
        .load()
        .expect_err("invalid");
    let text = errs.to_string();
    for needle in [
        "surprise",
        "apps[0].broker_url",
        "frontend",
        "colour",
        "ingest.batch_size",
        "/nonexistent/celery-cnc.toml",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(errs.0.len() >= 6, "{text}");
}

#[test]
fn bad_toml_names_the_line() {
    let errs = ConfigLoader::new()
        .toml_str("cnc.toml", "[frontend]\nport = = 3\n")
        .load()
        .expect_err("invalid");
    assert!(errs.to_string().contains("line 2"), "{errs}");
}

#[test]
fn secrets_are_redacted_when_shown() {
    let mut cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("a", "amqp://user:s3cret@h:5672//").backend("redis://:hunter2@h/1"))
        .database(DatabaseConfig::postgres("postgres://pg:pw@h/db"))
        .build()
        .expect("valid");
    if let Some(f) = &mut cfg.frontend {
        f.basic_auth = Some("admin:topsecret".into());
        f.bearer_token = Some("tok".into());
    }
    let shown = format!("{:?}", cfg.redacted());
    for secret in ["s3cret", "hunter2", "pw@", "topsecret", "\"tok\""] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains("amqp://user:***@h:5672//"));
}

#[test]
fn redact_url_cases() {
    assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
    assert_eq!(redact_url("redis://:pw@h/0"), "redis://:***@h/0");
    assert_eq!(redact_url("redis://pw@h/0"), "redis://***@h/0");
    assert_eq!(redact_url("amqp://u:p@a@h//"), "amqp://u:***@h//");
    assert_eq!(redact_url("not a url"), "not a url");
}

#[test]
fn database_urls() {
    let b = |u: &str| {
        DatabaseConfig {
            url: u.into(),
            ..Default::default()
        }
        .backend()
    };
    assert_eq!(b("cnc.db"), Ok(DatabaseBackend::Sqlite("cnc.db".into())));
    assert_eq!(
        b("sqlite:///var/x.db"),
        Ok(DatabaseBackend::Sqlite("/var/x.db".into()))
    );
    assert_eq!(b("memory://"), Ok(DatabaseBackend::Memory));
    assert!(matches!(
        b("postgresql://h/db"),
        Ok(DatabaseBackend::Postgres(_))
    ));
    assert!(b("mysql://h/db").is_err());
    assert!(b("").is_err());
}
