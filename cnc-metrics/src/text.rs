//! The Prometheus text exposition format, version 0.0.4 (what Flower and
//! celery-exporter serve, and what `promtool check metrics` lints).
//!
//! Label values are escaped once, when a series is created (see
//! [`escape_label`]), so a scrape only copies bytes.

use std::fmt::Write as _;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escape a label value: backslash, double quote and line feed.
pub fn escape_label(raw: &str) -> String {
    if !raw.contains(['\\', '"', '\n']) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Metric type on the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic counter (name ends with `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Writes one scrape. Families must be written whole, one after the other.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
    hist: HistNames,
}

impl TextWriter {
    /// A writer with room for `capacity` bytes (use the last scrape's size).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            hist: HistNames::default(),
        }
    }

    /// A writer reusing `buf`'s allocation (its content is cleared), with
    /// room for at least `capacity` bytes.
    pub fn with_buffer(mut buf: String, capacity: usize) -> Self {
        buf.clear();
        buf.reserve(capacity);
        Self {
            out: buf,
            hist: HistNames::default(),
        }
    }

    /// The `# HELP` and `# TYPE` lines of a family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
    }

    /// One sample. `labels` are (name, escaped value) pairs.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_with(name, labels, None, value);
    }

    /// One sample with an extra trailing label (`le` of a bucket), whose
    /// value is written as is.
    pub fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        write_sample(&mut self.out, name, labels, extra, value);
    }

    /// One histogram series: cumulative buckets (`le` holds the bounds
    /// pre-formatted; `+Inf` is added), `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        le: &[String],
        hist: &Histogram,
    ) {
        if self.hist.name != name {
            self.hist = HistNames::new(name);
        }
        let n = &self.hist;
        let mut cumulative = 0u64;
        for (i, le) in le.iter().enumerate() {
            cumulative += hist.counts.get(i).copied().unwrap_or(0);
            write_sample(
                &mut self.out,
                &n.bucket,
                labels,
                Some(("le", le)),
                cumulative as f64,
            );
        }
        write_sample(
            &mut self.out,
            &n.bucket,
            labels,
            Some(("le", "+Inf")),
            hist.count as f64,
        );
        write_sample(&mut self.out, &n.sum, labels, None, hist.sum);
        write_sample(&mut self.out, &n.count, labels, None, hist.count as f64);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The sample names of the histogram family being written.
#[derive(Debug, Default)]
struct HistNames {
    name: String,
    bucket: String,
    sum: String,
    count: String,
}

impl HistNames {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
        }
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().chain(extra.as_ref()) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

/// Write a sample value the way Prometheus parses it.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        push_int(out, v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Decimal digits without the formatting machinery (most samples are
/// counts).
fn push_int(out: &mut String, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        out.push('-');
    }
    for b in &buf[i..] {
        out.push(char::from(*b));
    }
}

/// Format a bucket bound for `le="…"`.
pub fn format_le(bound: f64) -> String {
    let mut s = String::new();
    push_value(&mut s, bound);
    if !s.contains(['.', 'e', 'I', 'N']) {
        s.push_str(".0");
    }
    s
}

/// Per-series histogram state: non-cumulative bucket counts (one per
/// bound), sum and count. Bounds live with the family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); length = number of bounds.
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram for `bounds.len()` buckets.
    pub fn new(buckets: usize) -> Self {
        Self {
            counts: vec![0; buckets],
            sum: 0.0,
            count: 0,
        }
    }

    /// Record `v` against sorted `bounds`.
    pub fn observe(&mut self, bounds: &[f64], v: f64) {
        if !v.is_finite() {
            return;
        }
        let i = bounds.partition_point(|b| *b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Validated histogram bounds: finite, sorted, deduplicated.
pub fn clean_bounds(raw: &[f64]) -> Vec<f64> {
    let mut b: Vec<f64> = raw.iter().copied().filter(|v| v.is_finite()).collect();
    b.sort_by(f64::total_cmp);
    b.dedup();
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("plain"), "plain");
        let mut s = String::new();
        push_value(&mut s, 3.0);
        s.push(' ');
        push_value(&mut s, 0.25);
        s.push(' ');
        push_value(&mut s, f64::INFINITY);
        s.push(' ');
        push_value(&mut s, -120.0);
        s.push(' ');
        push_value(&mut s, 0.0);
        assert_eq!(s, "3 0.25 +Inf -120 0");
        assert_eq!(format_le(1.0), "1.0");
        assert_eq!(format_le(0.005), "0.005");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let bounds = [0.1, 1.0];
        let le: Vec<String> = bounds.iter().map(|b| format_le(*b)).collect();
        let mut h = Histogram::new(2);
        for v in [0.05, 0.1, 0.5, 5.0] {
            h.observe(&bounds, v);
        }
        let mut w = TextWriter::default();
        w.family("x_seconds", Kind::Histogram, "X.");
        w.histogram("x_seconds", &[("a", "b")], &le, &h);
        let text = w.finish();
        assert!(
            text.contains("x_seconds_bucket{a=\"b\",le=\"0.1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{a=\"b\",le=\"1.0\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{a=\"b\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_count{a=\"b\"} 4\n"), "{text}");
    }
}
