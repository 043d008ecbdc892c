//! Reading Python literals back: task events carry args, kwargs and results
//! as Python `repr` text (`(1, 'a', {'k': None})`). Retrying a task needs the
//! real values, so this parses the literal subset (`ast.literal_eval` of
//! numbers, strings, bytes-free containers, `True`/`False`/`None`) into JSON.
//! Anything else (custom objects, `datetime(...)`) is refused: the UI then
//! says the task cannot be retried from its events, instead of guessing.

use serde_json::{Map, Number, Value};

/// Why a repr could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a plain Python literal at byte {at}: {what}")]
pub struct ReprError {
    /// Byte offset.
    pub at: usize,
    /// What was expected or found.
    pub what: String,
}

/// Parse a Python literal into JSON. Tuples and sets become arrays; dict keys
/// must be strings or numbers (numbers become their text).
pub fn parse(text: &str) -> Result<Value, ReprError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing text"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> ReprError {
        ReprError {
            at: self.i,
            what: what.to_owned(),
        }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, ReprError> {
        self.ws();
        self.depth += 1;
        if self.depth > 200 {
            return Err(self.err("nested too deeply"));
        }
        let v = match self.peek() {
            Some(b'[') => self.seq(b']').map(Value::Array),
            Some(b'(') => self.seq(b')').map(Value::Array),
            Some(b'{') => self.dict(),
            Some(b'\'' | b'"') => self.string().map(Value::String),
            Some(b'-' | b'+' | b'0'..=b'9' | b'.') => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.word(),
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end")),
        };
        self.depth -= 1;
        v
    }

    fn seq(&mut self, close: u8) -> Result<Vec<Value>, ReprError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(out);
            }
            out.push(self.value()?);
            if self.eat(b',') {
                continue;
            }
            if self.eat(close) {
                return Ok(out);
            }
            return Err(self.err("expected `,` or closing bracket"));
        }
    }

    fn dict(&mut self) -> Result<Value, ReprError> {
        self.i += 1;
        let mut out = Map::new();
        if self.eat(b'}') {
            return Ok(Value::Object(out));
        }
        loop {
            let key = match self.value()? {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                _ => return Err(self.err("dict key must be a string or a number")),
            };
            if !self.eat(b':') {
                // `{1, 2}` is a set.
                if self.eat(b',') || self.eat(b'}') {
                    return Err(self.err("sets are not supported"));
                }
                return Err(self.err("expected `:`"));
            }
            let v = self.value()?;
            out.insert(key, v);
            if self.eat(b',') {
                if self.eat(b'}') {
                    return Ok(Value::Object(out));
                }
                continue;
            }
            if self.eat(b'}') {
                return Ok(Value::Object(out));
            }
            return Err(self.err("expected `,` or `}`"));
        }
    }

    fn string(&mut self) -> Result<String, ReprError> {
        let q = self.s[self.i];
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == q {
                return String::from_utf8(out).map_err(|_| self.err("invalid UTF-8"));
            }
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.peek() else {
                break;
            };
            self.i += 1;
            let simple = match e {
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                b'0' => Some(0),
                b'\\' => Some(b'\\'),
                b'\'' => Some(b'\''),
                b'"' => Some(b'"'),
                _ => None,
            };
            if let Some(b) = simple {
                out.push(b);
                continue;
            }
            let digits = match e {
                b'x' => 2,
                b'u' => 4,
                b'U' => 8,
                _ => return Err(self.err("unknown escape")),
            };
            let hex = self
                .s
                .get(self.i..self.i + digits)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .ok_or_else(|| self.err("bad escape"))?;
            self.i += digits;
            let mut buf = [0u8; 4];
            out.extend_from_slice(hex.encode_utf8(&mut buf).as_bytes());
        }
        Err(self.err("unterminated string"))
    }

    fn number(&mut self) -> Result<Value, ReprError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'_') {
                self.i += 1;
            } else {
                break;
            }
        }
        let text: String = String::from_utf8_lossy(&self.s[start..self.i]).replace('_', "");
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Value::from(u));
        }
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| self.err("bad number"))
    }

    fn word(&mut self) -> Result<Value, ReprError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' {
                self.i += 1;
            } else {
                break;
            }
        }
        match &self.s[start..self.i] {
            b"True" => Ok(Value::Bool(true)),
            b"False" => Ok(Value::Bool(false)),
            b"None" => Ok(Value::Null),
            _ => {
                self.i = start;
                Err(self.err("only literals can be read back (found a name or a call)"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literals() {
        assert_eq!(parse("(1, 'a', None)").ok(), Some(json!([1, "a", null])));
        assert_eq!(
            parse("{'k': [True, False, 1.5, -2], \"d\": {}}").ok(),
            Some(json!({"k": [true, false, 1.5, -2], "d": {}}))
        );
        assert_eq!(parse("'it\\'s \\u00e9\\n'").ok(), Some(json!("it's é\n")));
        assert_eq!(parse("[]").ok(), Some(json!([])));
        assert_eq!(parse("(1,)").ok(), Some(json!([1])));
        assert_eq!(parse("{1: 'x'}").ok(), Some(json!({"1": "x"})));
    }

    #[test]
    fn refuses_objects() {
        assert!(parse("[datetime.datetime(2020, 1, 1)]").is_err());
        assert!(parse("<object at 0x1>").is_err());
        assert!(parse("[1, 2").is_err());
        assert!(parse("{1, 2}").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
    }
}
