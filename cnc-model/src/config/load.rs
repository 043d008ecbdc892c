//! Layered loading: defaults < file < environment < flags, every error at
//! once.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use super::CeleryCncConfig;

/// Environment variables starting with this prefix override config fields:
/// `CELERY_CNC__FRONTEND__PORT=9000` sets `frontend.port`. Values are read
/// as TOML (`9000`, `true`, `["a", "b"]`, `{ name = "x", broker_url = "…" }`)
/// and as a plain string when that fails, so `CELERY_CNC__DATABASE__URL=
/// postgres://…` needs no quotes. `CELERY_CNC__FRONTEND=false` turns a
/// section off.
pub const ENV_PREFIX: &str = "CELERY_CNC__";

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a dotted field path (`frontend.port`), a file, or an
    /// environment variable.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Builds a [`CeleryCncConfig`] from layers. Later layers win, field by
/// field; tables merge, arrays and scalars replace.
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    layers: Vec<(String, Table)>,
    errors: Vec<ConfigError>,
}

impl ConfigLoader {
    /// Start from the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a TOML file. A missing or unreadable file, or bad TOML, is an
    /// error (reported with the others at [`Self::load`]).
    pub fn file(mut self, path: &Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(text) => self = self.toml_str(&path.display().to_string(), &text),
            Err(e) => self.errors.push(ConfigError {
                path: path.display().to_string(),
                message: format!("cannot read: {e}"),
            }),
        }
        self
    }

    /// Add TOML text; `origin` names it in errors.
    pub fn toml_str(mut self, origin: &str, text: &str) -> Self {
        match text.parse::<Table>() {
            Ok(table) => self.layers.push((origin.to_owned(), table)),
            Err(e) => self.errors.push(ConfigError {
                path: origin.to_owned(),
                message: e.message().to_owned()
                    + &e.span()
                        .map(|s| format!(" (line {})", line_of(text, s.start)))
                        .unwrap_or_default(),
            }),
        }
        self
    }

    /// Add the `CELERY_CNC__*` variables from `vars` (pass
    /// `std::env::vars()`).
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut table = Table::new();
        for (key, raw) in vars {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if path.iter().any(String::is_empty) {
                self.errors.push(ConfigError {
                    path: key.clone(),
                    message: "empty path segment".into(),
                });
                continue;
            }
            let value = parse_env_value(&raw);
            set_path(&mut table, &path, value);
        }
        if !table.is_empty() {
            self.layers.push(("environment".into(), table));
        }
        self
    }

    /// Set one field from a flag: `set("frontend.port", 9000)`.
    pub fn set(mut self, dotted: &str, value: impl Into<Value>) -> Self {
        let path: Vec<String> = dotted.split('.').map(str::to_owned).collect();
        let mut table = Table::new();
        set_path(&mut table, &path, value.into());
        self.layers.push(("flags".into(), table));
        self
    }

    /// Merge a whole table as a layer (flags that set several fields).
    pub fn layer(mut self, origin: &str, table: Table) -> Self {
        self.layers.push((origin.to_owned(), table));
        self
    }

    /// Merge the layers, deserialize section by section and validate.
    /// Every error found is returned at once.
    pub fn load(self) -> Result<CeleryCncConfig, ConfigErrors> {
        let mut errors = self.errors;
        let mut merged = Table::new();
        for (_, layer) in self.layers {
            merge(&mut merged, layer);
        }
        let mut config = CeleryCncConfig::default();
        // Section by section, so one bad section doesn't hide the others.
        for (key, value) in merged {
            let mut one = Table::new();
            one.insert(key.clone(), value);
            match CeleryCncConfig::deserialize(Value::Table(one)) {
                Ok(parsed) => assign(&mut config, &parsed, &key),
                Err(e) => errors.push(ConfigError {
                    path: key.clone(),
                    message: clean_message(&e.to_string()),
                }),
            }
        }
        if let Err(ConfigErrors(mut v)) = config.validate() {
            errors.append(&mut v);
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// Copy the section `key` of `from` into `to`.
fn assign(to: &mut CeleryCncConfig, from: &CeleryCncConfig, key: &str) {
    match key {
        "apps" => to.apps = from.apps.clone(),
        "logging" => to.logging = from.logging.clone(),
        "database" => to.database = from.database.clone(),
        "ingest" => to.ingest = from.ingest.clone(),
        "beat" => to.beat = from.beat.clone(),
        "prometheus" => to.prometheus = from.prometheus.clone(),
        "open_telemetry" => to.open_telemetry = from.open_telemetry.clone(),
        "frontend" => to.frontend = from.frontend.clone(),
        // Unknown keys fail deserialization (deny_unknown_fields) before
        // they get here.
        _ => {}
    }
}

fn clean_message(m: &str) -> String {
    m.trim().replace('\n', " ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|s| s.matches('\n').count() + 1)
        .unwrap_or(1)
}

fn parse_env_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match doc.parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut Table, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            if let Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Create `dir` if it is missing; an error says which path and why.
pub fn ensure_dir(dir: &Path) -> Result<PathBuf, ConfigErrors> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ConfigErrors::one(dir.display().to_string(), format!("cannot create: {e}")))?;
    Ok(dir.to_path_buf())
}
