//! A Python-`repr`-like rendering of JSON values, for the `argsrepr` and
//! `kwargsrepr` headers that tools display (README 2c).

use serde_json::Value;

/// Celery's default `argsrepr_maxsize` / `kwargsrepr_maxsize`.
pub const DEFAULT_REPR_MAXSIZE: usize = 1024;

/// Render positional args as a Python tuple: `()`, `(1,)`, `(2, 3)`.
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(&mut out, a, 0);
    }
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    truncate(out, DEFAULT_REPR_MAXSIZE)
}

/// Render keyword args as a Python dict: `{}`, `{'x': 1, 'y': 2}`.
pub fn kwargs_repr(kwargs: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, kwargs, 0);
    truncate(out, DEFAULT_REPR_MAXSIZE)
}

/// Render any JSON value as Python would print the equivalent object:
/// `None`, `True`, `'text'`, `[1, 2]`, `{'k': 'v'}`.
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value, 0);
    out
}

/// Cut `s` to `max` characters plus `...`, as Celery's `saferepr` does.
fn truncate(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut cut: String = s.chars().take(max).collect();
    cut.push_str("...");
    cut
}

/// Deeper than this, render `...` (Python's reprlib stops at a depth too, and
/// it keeps the recursion bounded).
const MAX_DEPTH: usize = 64;

fn write_repr(out: &mut String, v: &Value, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("...");
        return;
    }
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                write_float(out, f);
            } else {
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, it, depth + 1);
            }
            out.push(']');
        }
        Value::Object(map) => write_map(out, map, depth),
    }
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, depth: usize) {
    out.push('{');
    for (i, (k, val)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_repr(out, val, depth + 1);
    }
    out.push('}');
}

fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        out.push_str(&format!("{f:.1}"));
    } else {
        // Rust's shortest round-trip form matches Python's repr for ordinary
        // magnitudes; exponents are written the Python way (`1e+20`).
        let s = format!("{f}");
        out.push_str(&s);
    }
}

fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python() {
        assert_eq!(args_repr(&[json!(2), json!(3)]), "(2, 3)");
        assert_eq!(args_repr(&[json!(1)]), "(1,)");
        assert_eq!(args_repr(&[]), "()");
        let kw = json!({"x": 1, "y": 2});
        assert_eq!(kwargs_repr(kw.as_object().unwrap()), "{'x': 1, 'y': 2}");
        assert_eq!(
            py_repr(&json!([null, true, false, 1.5, 2.0])),
            "[None, True, False, 1.5, 2.0]"
        );
        assert_eq!(py_repr(&json!("it's")), "\"it's\"");
        assert_eq!(py_repr(&json!("a'b\"c")), "'a\\'b\"c'");
        assert_eq!(py_repr(&json!([[0]])), "[[0]]");
        assert_eq!(py_repr(&json!("boom")), "'boom'");
    }

    #[test]
    fn truncates_long_args() {
        let big = vec![json!("x".repeat(5000))];
        let r = args_repr(&big);
        assert!(r.ends_with("..."));
        assert_eq!(r.chars().count(), DEFAULT_REPR_MAXSIZE + 3);
    }
}
