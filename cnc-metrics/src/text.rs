//! The Prometheus text exposition format, version 0.0.4 (what Flower and
//! celery-exporter serve, and what `promtool check metrics` lints).
//!
//! Label values are escaped once, when a series is created (see
//! [`escape_label`]), so a scrape only copies bytes.
//!
//! Most series keep their rendered lines between scrapes ([`Cached`]): a
//! value's text is written again only after `observe` changed it, so a
//! scrape of a large, mostly idle set is a copy of cached text, and one
//! under load re-renders only the series that moved.

use std::fmt::Write as _;

use bytes::Bytes;

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
///
/// The text is a list of chunks: lines written here, and cached series
/// text appended by reference ([`TextWriter::chunk`]) without a copy.
#[derive(Debug, Default)]
pub struct TextWriter {
    /// Lines not yet moved to `chunks`.
    out: String,
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    len: usize,
    hist: HistNames,
}

impl TextWriter {
    /// A writer with room for `capacity` bytes (use the last scrape's size).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// A writer reusing `buf`'s allocation (its content is cleared), with
    /// room for at least `capacity` bytes.
    pub fn with_buffer(mut buf: String, capacity: usize) -> Self {
        buf.clear();
        buf.reserve(capacity);
        Self {
            out: buf,
            ..Self::default()
        }
    }

    /// A writer collecting chunks into `chunks` (cleared; its allocation
    /// is reused).
    pub fn with_chunks(mut chunks: Vec<Bytes>) -> Self {
        chunks.clear();
        Self {
            out: String::with_capacity(16 * 1024),
            chunks,
            ..Self::default()
        }
    }

    /// Append `chunk` (text in the format, e.g. a series' cached lines) by
    /// reference.
    pub fn chunk(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.flush();
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.len += self.out.len();
            self.chunks
                .push(Bytes::copy_from_slice(self.out.as_bytes()));
            self.out.clear();
        }
    }

    /// The chunks of the text and its total length.
    pub fn finish_chunks(mut self) -> (Vec<Bytes>, usize) {
        self.flush();
        (self.chunks, self.len)
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

    /// The text written so far, in one string.
    pub fn finish(self) -> String {
        if self.chunks.is_empty() {
            return self.out;
        }
        let mut s = String::with_capacity(self.len + self.out.len());
        for c in &self.chunks {
            // Chunks are whole lines of text written by this module.
            s.push_str(std::str::from_utf8(c).unwrap_or_default());
        }
        s.push_str(&self.out);
        s
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

/// One sample line into `out` (see [`TextWriter::sample`]).
pub(crate) fn sample_into(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    write_sample(out, name, labels, None, value);
}

/// The sample names and `le` label tails of one histogram family, built
/// once so a series' lines are a few copies each.
#[derive(Debug, Clone)]
pub(crate) struct HistFamily {
    bucket: String,
    sum: String,
    count: String,
    /// `le="<bound>"} ` per bound, then `le="+Inf"} `.
    tails: Vec<String>,
}

impl HistFamily {
    /// Family `name` with bucket bounds `le` (pre-formatted, see
    /// [`format_le`]).
    pub(crate) fn new(name: &str, le: &[String]) -> Self {
        let mut tails: Vec<String> = le.iter().map(|b| format!("le=\"{b}\"}} ")).collect();
        tails.push("le=\"+Inf\"} ".to_owned());
        Self {
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
            tails,
        }
    }
}

/// One histogram series into `out`: the same lines as
/// [`TextWriter::histogram`]. `scratch` holds the label set, formatted once
/// for all of the series' lines.
pub(crate) fn histogram_into(
    out: &mut String,
    f: &HistFamily,
    labels: &[(&str, &str)],
    hist: &Histogram,
    scratch: &mut String,
) {
    // `{a="x",b="y",` (just `{` without labels): every bucket line starts
    // with it, `_sum` and `_count` with all but its last byte.
    scratch.clear();
    scratch.push('{');
    for (k, v) in labels {
        scratch.push_str(k);
        scratch.push_str("=\"");
        scratch.push_str(v);
        scratch.push_str("\",");
    }
    let mut cumulative = 0u64;
    let last = f.tails.len() - 1;
    for (i, tail) in f.tails.iter().enumerate() {
        let v = if i == last {
            hist.count
        } else {
            cumulative += hist.counts.get(i).copied().unwrap_or(0);
            cumulative
        };
        out.push_str(&f.bucket);
        out.push_str(scratch);
        out.push_str(tail);
        push_u64(out, v);
        out.push('\n');
    }
    let open = &scratch[..scratch.len() - 1];
    for (name, v) in [(&f.sum, None), (&f.count, Some(hist.count))] {
        out.push_str(name);
        if labels.is_empty() {
            out.push(' ');
        } else {
            out.push_str(open);
            out.push_str("} ");
        }
        match v {
            Some(n) => push_u64(out, n),
            None => push_value(out, hist.sum),
        }
        out.push('\n');
    }
}

/// Where re-rendered series text goes: an arena of shared buffers, so a
/// series' text is a slice of a large buffer ([`Bytes`], no allocation of
/// its own), a scrape references it instead of copying it, and a
/// re-render never touches text an earlier scrape is still sending.
/// Buffers nobody points into any more are reused (their pages are
/// already mapped).
///
/// A buffer lives while any series still points into it, so text of
/// series that rarely change could pin buffers whose other text was
/// replaced. To bound that, a series whose text was written more than
/// twice a scrape's size ago is rendered again (moved to the current
/// buffer), at most an eighth of a scrape's size per scrape so the work is
/// spread out.
#[derive(Debug, Default)]
pub(crate) struct SeriesText {
    arena: bytes::BytesMut,
    /// Full buffers, oldest first, reused once no series points into them.
    retired: std::collections::VecDeque<bytes::BytesMut>,
    /// The lines of the series being rendered.
    line: String,
    /// Bytes written into buffers so far.
    at: u64,
    /// Text written before this position is moved this scrape.
    horizon: u64,
    /// Bytes of unchanged series that may still be moved this scrape.
    budget: usize,
}

/// Size of one arena buffer.
const ARENA_BYTES: usize = 1 << 20;

/// Retired buffers kept for reuse at most.
const RETIRED_BUFFERS: usize = 1024;

impl SeriesText {
    /// Start a scrape whose last text was `last_len` bytes.
    pub(crate) fn begin(&mut self, last_len: usize) {
        let window = 2 * last_len as u64 + ARENA_BYTES as u64;
        self.horizon = self.at.saturating_sub(window);
        self.budget = last_len / 8 + ARENA_BYTES;
    }

    fn store(&mut self) -> Bytes {
        let n = self.line.len();
        if self.arena.capacity() - self.arena.len() < n {
            self.next_arena(n);
        }
        self.arena.extend_from_slice(self.line.as_bytes());
        self.at += n as u64;
        self.arena.split().freeze()
    }

    fn next_arena(&mut self, n: usize) {
        let want = ARENA_BYTES.max(n);
        let full = std::mem::take(&mut self.arena);
        let mut found = None;
        for (i, b) in self.retired.iter_mut().enumerate() {
            if b.try_reclaim(want) {
                found = Some(i);
                break;
            }
        }
        self.arena = match found.and_then(|i| self.retired.remove(i)) {
            Some(b) => b,
            None => bytes::BytesMut::with_capacity(want),
        };
        if full.capacity() > 0 {
            self.retired.push_back(full);
        }
        if self.retired.len() > RETIRED_BUFFERS {
            self.retired.pop_front();
        }
    }
}

/// A series' value with its rendered text (one part per family the value
/// appears in), kept between scrapes: written again only after
/// [`Cached::get_mut`] or a changing [`Cached::set`] (or when
/// [`SeriesText`] moves old text).
#[derive(Debug, Clone)]
pub(crate) struct Cached<V, const N: usize = 1> {
    value: V,
    text: Bytes,
    /// End of each part in `text`.
    ends: [u32; N],
    stale: bool,
    /// Where in the [`SeriesText`] stream `text` was written.
    at: u64,
}

impl<V: Default, const N: usize> Default for Cached<V, N> {
    fn default() -> Self {
        Self::new(V::default())
    }
}

impl<V, const N: usize> Cached<V, N> {
    /// A new series (rendered at the next scrape).
    pub(crate) fn new(value: V) -> Self {
        Self {
            value,
            text: Bytes::new(),
            ends: [0; N],
            stale: true,
            at: 0,
        }
    }

    /// The value, to change: the text is re-rendered at the next scrape.
    pub(crate) fn get_mut(&mut self) -> &mut V {
        self.stale = true;
        &mut self.value
    }

    /// Set the value (re-rendered only if it differs).
    pub(crate) fn set(&mut self, value: V)
    where
        V: PartialEq,
    {
        if self.value != value {
            self.value = value;
            self.stale = true;
        }
    }

    /// Part `i` of the text. When the value changed since the last call,
    /// every part is rendered again first: `render(value, part, out)`
    /// appends part `part`'s lines to `out`.
    pub(crate) fn part(
        &mut self,
        i: usize,
        to: &mut SeriesText,
        mut render: impl FnMut(&V, usize, &mut String),
    ) -> Bytes {
        let old = self.at < to.horizon && to.budget > 0;
        if self.stale || old {
            self.at = to.at;
            to.line.clear();
            for p in 0..N {
                render(&self.value, p, &mut to.line);
                self.ends[p] = u32::try_from(to.line.len()).unwrap_or(u32::MAX);
            }
            if old && !self.stale {
                to.budget = to.budget.saturating_sub(to.line.len());
            }
            self.text = to.store();
            self.stale = false;
        }
        if N == 1 {
            return self.text.clone();
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(start, |e| *e as usize);
        if start >= end {
            return Bytes::new();
        }
        self.text.slice(start..end)
    }
}

impl<V, const N: usize> std::ops::Deref for Cached<V, N> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.value
    }
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
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_u64(out: &mut String, mut n: u64) {
    if n < 10 {
        out.push(char::from(b'0' + n as u8));
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
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
    fn histogram_into_writes_what_the_writer_writes() {
        let bounds = [0.1, 1.0, 2.5];
        let le: Vec<String> = bounds.iter().map(|b| format_le(*b)).collect();
        let mut h = Histogram::new(3);
        for v in [0.05, 0.5, 0.75, 9.0] {
            h.observe(&bounds, v);
        }
        let f = HistFamily::new("x_seconds", &le);
        let mut scratch = String::new();
        for labels in [&[][..], &[("a", "b"), ("c", "d\\\"")][..]] {
            let mut w = TextWriter::default();
            w.histogram("x_seconds", labels, &le, &h);
            let mut out = String::new();
            histogram_into(&mut out, &f, labels, &h, &mut scratch);
            assert_eq!(out, w.finish());
        }
    }

    #[test]
    fn cached_text_is_rendered_again_only_after_a_change() {
        let mut to = SeriesText::default();
        to.begin(0);
        let mut c: Cached<(u64, u64), 2> = Cached::new((1, 2));
        let mut renders = 0;
        let mut part = |c: &mut Cached<(u64, u64), 2>, to: &mut SeriesText, i: usize| {
            let b = c.part(i, to, |v, p, out| {
                renders += 1;
                sample_into(
                    out,
                    if p == 0 { "a" } else { "b" },
                    &[],
                    [v.0, v.1][p] as f64,
                );
            });
            String::from_utf8(b.to_vec()).expect("utf-8")
        };
        assert_eq!(part(&mut c, &mut to, 0), "a 1\n");
        assert_eq!(part(&mut c, &mut to, 1), "b 2\n");
        c.set((1, 2));
        assert_eq!(part(&mut c, &mut to, 1), "b 2\n");
        c.get_mut().1 = 5;
        assert_eq!(part(&mut c, &mut to, 0), "a 1\n");
        assert_eq!(part(&mut c, &mut to, 1), "b 5\n");
        // Two parts per render, two renders.
        assert_eq!(renders, 4);
    }

    #[test]
    fn old_text_moves_and_buffers_are_reused() {
        let mut to = SeriesText::default();
        let mut series: Vec<Cached<u64>> = (0..3000).map(Cached::new).collect();
        let render = |v: &u64, _: usize, out: &mut String| {
            sample_into(
                out,
                "a_long_metric_name_to_fill_buffers",
                &[("k", "v")],
                *v as f64,
            );
            out.push_str(&"#".repeat(1000));
            out.push('\n');
        };
        let mut len = 0;
        for round in 0..40 {
            to.begin(len);
            len = 0;
            for (i, s) in series.iter_mut().enumerate() {
                // A tenth of the series change each round.
                if i % 10 == round % 10 {
                    *s.get_mut() += 1;
                }
                len += s.part(0, &mut to, render).len();
            }
        }
        // Unchanged text was moved out of old buffers, so they were
        // reclaimed instead of piling up.
        let held = (to.retired.len() + 1) * ARENA_BYTES;
        assert!(held <= 4 * len + 2 * ARENA_BYTES, "{held} bytes for {len}");
        assert!(to.at < 40 * len as u64, "{} written", to.at);
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
