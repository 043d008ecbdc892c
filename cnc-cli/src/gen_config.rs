//! `celery-cnc gen-config`: every setting with its default value and its
//! documentation, as TOML.
//!
//! Nothing here is written twice, so it cannot drift:
//!
//! * the **values** are `CeleryCncConfig::default()` (and each off
//!   section's own `Default`) serialized;
//! * the **comments** are the doc comments of the config structs, read from
//!   `cnc-model`'s source (embedded at compile time with `include_str!`);
//! * the **order** is the structs' field order.
//!
//! Tests check that every serialized field has a documented source field and
//! the other way round, that the output loads back to exactly the defaults,
//! and that the version with every section and example turned on loads too.

use std::collections::BTreeMap;

use cnc_core::config::{BeatConfig, CeleryCncConfig, OpenTelemetryConfig, PrometheusConfig};
use serde_json::Value;

/// The config structs' source.
const SOURCE: &str = include_str!("../../cnc-model/src/config/mod.rs");

/// Example values for fields that are unset by default (shown commented
/// out). Fields not listed get an example from their type.
const EXAMPLES: &[(&str, &str)] = &[
    ("apps.name", "\"default\""),
    ("apps.broker_url", "\"redis://127.0.0.1:6379/0\""),
    ("apps.result_backend", "\"redis://127.0.0.1:6379/1\""),
    ("apps.default_queue", "\"celery\""),
    ("apps.key_prefix", "\"myprefix:\""),
    ("database.retention", "\"30days\""),
    ("database.max_size_mib", "10240"),
    ("beat.schedule_path", "\"schedules.toml\""),
    ("beat.app", "\"default\""),
    ("prometheus.task_names", "[\"proj.tasks.important\"]"),
    ("frontend.basic_auth", "\"admin:change-me\""),
    ("frontend.bearer_token", "\"change-me\""),
];

/// One documented field of a config struct.
#[derive(Debug, Clone)]
pub struct Field {
    /// Field name (= TOML key).
    pub name: String,
    /// Rust type as written.
    pub ty: String,
    /// Doc comment lines.
    pub doc: Vec<String>,
}

/// Structs and enums parsed from [`SOURCE`].
#[derive(Debug, Default)]
pub struct Source {
    /// Struct name -> fields in order.
    pub structs: BTreeMap<String, Vec<Field>>,
    /// Enum name -> accepted values (serde names).
    pub enums: BTreeMap<String, Vec<String>>,
}

/// Parse the config module's source: `pub struct X {` blocks with `///`
/// documented `pub field: Type,` lines, and unit-variant enums with their
/// `rename_all` rule. Line based: the file is rustfmt-formatted.
pub fn parse_source(text: &str) -> Source {
    let mut src = Source::default();
    let mut doc: Vec<String> = Vec::new();
    let mut rename_all: Option<String> = None;
    let mut current_struct: Option<(String, Vec<Field>)> = None;
    let mut current_enum: Option<(String, Vec<String>, Option<String>)> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(d) = line.strip_prefix("///") {
            doc.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
            continue;
        }
        if line.starts_with("#[") {
            if let Some(rule) = line
                .split("rename_all = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                rename_all = Some(rule.to_owned());
            }
            continue;
        }
        if raw.starts_with('}') {
            if let Some((name, fields)) = current_struct.take() {
                src.structs.insert(name, fields);
            }
            if let Some((name, variants, _)) = current_enum.take() {
                src.enums.insert(name, variants);
            }
            doc.clear();
            rename_all = None;
            continue;
        }
        if let Some(rest) = raw.strip_prefix("pub struct ")
            && let Some(name) = rest.strip_suffix(" {")
        {
            current_struct = Some((name.to_owned(), Vec::new()));
        } else if let Some(rest) = raw.strip_prefix("pub enum ")
            && let Some(name) = rest.strip_suffix(" {")
        {
            current_enum = Some((name.to_owned(), Vec::new(), rename_all.take()));
        } else if let Some((_, fields)) = &mut current_struct
            && let Some(rest) = raw.strip_prefix("    pub ")
            && let Some((name, ty)) = rest.split_once(": ")
        {
            fields.push(Field {
                name: name.to_owned(),
                ty: ty.trim_end_matches(',').to_owned(),
                doc: std::mem::take(&mut doc),
            });
        } else if let Some((_, variants, rule)) = &mut current_enum
            && let Some(v) = raw.strip_prefix("    ").and_then(|v| v.strip_suffix(','))
            && !v.is_empty()
            && v.chars().all(|c| c.is_ascii_alphanumeric())
        {
            variants.push(rename(v, rule.as_deref()));
        }
        doc.clear();
    }
    src
}

fn rename(variant: &str, rule: Option<&str>) -> String {
    match rule {
        Some("lowercase") => variant.to_lowercase(),
        Some("snake_case") => {
            let mut out = String::new();
            for (i, c) in variant.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
            }
            out
        }
        _ => variant.to_owned(),
    }
}

/// The struct a field's type names: `Option<LoggingConfig>` ->
/// `LoggingConfig`, `Vec<CeleryApp>` -> `CeleryApp`.
fn inner_type(ty: &str) -> &str {
    let mut t = ty.trim();
    for wrapper in ["Option<", "Vec<"] {
        if let Some(rest) = t.strip_prefix(wrapper) {
            t = rest.strip_suffix('>').unwrap_or(rest);
        }
    }
    t
}

/// The commented default configuration.
pub fn generate() -> String {
    render(false)
}

/// Render the config; with `all_on`, every section and every example is
/// written as a live setting (used by the tests to check the examples).
pub fn render(all_on: bool) -> String {
    let src = parse_source(SOURCE);
    let defaults = serde_json::to_value(CeleryCncConfig::default()).unwrap_or(Value::Null);
    let off_defaults: BTreeMap<&str, Value> = [
        ("beat", serde_json::to_value(BeatConfig::default())),
        (
            "prometheus",
            serde_json::to_value(PrometheusConfig::default()),
        ),
        (
            "open_telemetry",
            serde_json::to_value(OpenTelemetryConfig::default()),
        ),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.ok().map(|v| (k, v)))
    .collect();

    let mut out = String::new();
    out.push_str(HEADER);
    let root = src
        .structs
        .get("CeleryCncConfig")
        .cloned()
        .unwrap_or_default();
    for field in &root {
        out.push('\n');
        let value = defaults.get(&field.name).unwrap_or(&Value::Null);
        let fields = src
            .structs
            .get(inner_type(&field.ty))
            .cloned()
            .unwrap_or_default();
        comment_lines(&mut out, "", &field.doc);
        if field.ty.starts_with("Vec<") {
            // The apps: an array of tables, empty by default.
            let empty = value.as_array().is_none_or(Vec::is_empty);
            out.push_str("# One table per app, for example:\n");
            let prefix = if all_on || !empty { "" } else { "# " };
            out.push_str(&format!("{prefix}[[{}]]\n", field.name));
            for f in &fields {
                let path = format!("{}.{}", field.name, f.name);
                setting(&mut out, prefix, &path, f, &Value::Null, &src, true);
            }
            continue;
        }
        let (section_value, on) = match value {
            Value::Null => (
                off_defaults
                    .get(field.name.as_str())
                    .cloned()
                    .unwrap_or(Value::Null),
                false,
            ),
            v => (v.clone(), true),
        };
        let prefix = if on || all_on { "" } else { "# " };
        if on {
            if field.ty.starts_with("Option<") {
                out.push_str(&format!(
                    "# On by default; `{} = false` turns it off.\n",
                    field.name
                ));
            }
        } else {
            out.push_str("# Uncomment the section to turn it on.\n");
        }
        out.push_str(&format!("{prefix}[{}]\n", field.name));
        for f in &fields {
            let v = section_value.get(&f.name).unwrap_or(&Value::Null);
            let path = format!("{}.{}", field.name, f.name);
            setting(&mut out, prefix, &path, f, v, &src, all_on);
        }
    }
    out
}

const HEADER: &str = "\
# celery-cnc configuration: every setting, with its default value.
#
# Layers, later ones win field by field: these defaults < this file
# (`celery-cnc run --config FILE`) < environment variables
# (`CELERY_CNC__FRONTEND__PORT=9000` sets frontend.port) < command line flags.
# Durations are written like \"100ms\", \"30s\", \"5m\", \"7days\".
# Check a file with `celery-cnc check-config --config FILE`.
";

fn comment_lines(out: &mut String, prefix: &str, doc: &[String]) {
    for line in doc {
        if line.is_empty() {
            out.push_str(&format!("{prefix}#\n"));
        } else {
            out.push_str(&format!("{prefix}# {line}\n"));
        }
    }
}

/// One `key = value` line with its doc; unset values are commented out
/// with an example unless `live`.
fn setting(
    out: &mut String,
    prefix: &str,
    path: &str,
    field: &Field,
    value: &Value,
    src: &Source,
    live: bool,
) {
    let mut doc = field.doc.clone();
    if let Some(values) = src.enums.get(inner_type(&field.ty)) {
        doc.push(format!("One of: {}.", values.join(", ")));
    }
    comment_lines(out, prefix, &doc);
    match value {
        Value::Null => {
            let example = example(path, &field.ty);
            let c = if live { "" } else { "# " };
            out.push_str(&format!("{prefix}{c}{} = {example}\n", field.name));
        }
        v => out.push_str(&format!("{prefix}{} = {}\n", field.name, toml_value(v))),
    }
}

fn example(path: &str, ty: &str) -> String {
    if let Some((_, e)) = EXAMPLES.iter().find(|(p, _)| *p == path) {
        return (*e).to_owned();
    }
    match inner_type(ty) {
        "Duration" => "\"1h\"".into(),
        "PathBuf" | "String" => "\"\"".into(),
        "bool" => "false".into(),
        "f64" => "1.0".into(),
        _ => "1".into(),
    }
}

/// A JSON value written as an inline TOML value.
fn toml_value(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => toml::Value::Float(f).to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => toml::Value::String(s.clone()).to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            if map.is_empty() {
                return "{}".into();
            }
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", toml::Value::String(k.clone()), toml_value(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnc_core::config::ConfigLoader;
    use std::collections::BTreeSet;

    #[test]
    fn output_loads_back_to_the_defaults() {
        let text = generate();
        let cfg = ConfigLoader::new()
            .toml_str("gen-config", &text)
            .load()
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(cfg, CeleryCncConfig::default());
    }

    #[test]
    fn every_section_and_example_is_valid() {
        let text = render(true);
        let cfg = ConfigLoader::new()
            .toml_str("gen-config all on", &text)
            .load()
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(cfg.beat.is_some() && cfg.prometheus.is_some() && cfg.open_telemetry.is_some());
        assert_eq!(cfg.apps.len(), 1);
        assert_eq!(
            cfg.database.retention.map(|d| d.as_secs()),
            Some(30 * 86_400)
        );
    }

    /// Every serialized field is documented in the source, and every
    /// documented field is serialized: the parse cannot silently miss one.
    #[test]
    fn source_fields_match_the_serialized_config() {
        let src = parse_source(SOURCE);
        let full = CeleryCncConfig {
            beat: Some(BeatConfig::default()),
            prometheus: Some(PrometheusConfig::default()),
            open_telemetry: Some(OpenTelemetryConfig::default()),
            apps: vec![cnc_core::config::CeleryApp::new("a", "redis://h/0")],
            ..CeleryCncConfig::default()
        };
        let value = serde_json::to_value(&full).expect("serialize");
        let root = &src.structs["CeleryCncConfig"];
        let serialized: BTreeSet<&String> = value.as_object().expect("object").keys().collect();
        let parsed: BTreeSet<&String> = root.iter().map(|f| &f.name).collect();
        assert_eq!(serialized, parsed);
        for f in root {
            assert!(!f.doc.is_empty(), "{} has no doc", f.name);
            let section = match &value[&f.name] {
                Value::Array(a) => a[0].clone(),
                v => v.clone(),
            };
            let Value::Object(map) = section else {
                panic!("{} is not a section", f.name)
            };
            let fields = &src.structs[inner_type(&f.ty)];
            let serialized: BTreeSet<&String> = map.keys().collect();
            let parsed: BTreeSet<&String> = fields.iter().map(|f| &f.name).collect();
            assert_eq!(serialized, parsed, "section {}", f.name);
            for sub in fields {
                assert!(!sub.doc.is_empty(), "{}.{} has no doc", f.name, sub.name);
            }
        }
        assert_eq!(
            src.enums["Rotation"],
            ["minutely", "hourly", "daily", "never"]
        );
        assert_eq!(src.enums["OtlpProtocol"], ["grpc", "http_protobuf"]);
    }
}
