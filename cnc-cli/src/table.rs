//! Plain text tables for terminal output: a header row and aligned columns
//! separated by two spaces (the `docker ps` style), no box drawing, so the
//! output stays readable in logs and greppable.

use std::fmt::Write as _;

/// Longest cell shown; longer text is cut with `…` (use `--json` for all of
/// it).
const MAX_CELL: usize = 80;

/// A table being built.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row; missing cells are empty, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(|c| clean(&c.into())).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, ending with a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
                if i + 1 == line.len() {
                    text.push_str(cell);
                } else {
                    let _ = write!(text, "{cell}{}  ", " ".repeat(w - width(cell)));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// One line, at most [`MAX_CELL`] characters.
fn clean(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if width(&one_line) > MAX_CELL {
        let mut cut: String = one_line.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_long_cells_cut() {
        let mut t = Table::new(&["worker", "reply"]);
        t.row(["w1@host", "pong"]);
        t.row(["a-much-longer-name@host", "line\nbreak"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "WORKER                   REPLY");
        assert_eq!(lines[1], "w1@host                  pong");
        assert_eq!(lines[2], "a-much-longer-name@host  line break");
        let mut long = Table::new(&["id"]);
        long.row(["x".repeat(200)]);
        let text = long.render();
        let last = text.lines().last().unwrap_or_default();
        assert_eq!(last.chars().count(), MAX_CELL);
        assert!(last.ends_with('…'));
    }
}
