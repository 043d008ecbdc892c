//! Substring search for the SQLite store.
//!
//! # Why not a plain FTS5 trigram table
//! FTS5's `trigram` tokenizer indexes every character position. Measured on
//! this project's reference machine with the bundled SQLite, it indexed
//! 5,000-11,000 task documents per second (about 590 characters each), and
//! 2-2.7 KB of index per task: far below the 24,000 tasks/s that 100,000
//! events/s carry. So:
//!
//! * A task's search text ([`cnc_model::Task::search_text`], lower-cased) is
//!   reduced to the set of its **distinct trigrams**, each hashed to 24 bits
//!   and written as a short hex word. That set goes into a contentless FTS5
//!   table with the `ascii` tokenizer and `detail=none` (no positions). It
//!   indexes about twice as fast and takes about 450 bytes per task.
//! * A query string of 3+ characters becomes the AND of its trigram words:
//!   the index returns every task containing all of its trigrams (a
//!   superset), newest first, and each candidate is then **verified
//!   exactly** (`cnc_text_has`, a SQL function over the stored task), so
//!   results are exactly "case-insensitive substring", as the contract says.
//!   Shorter strings scan with the same exact function.
//! * The index lives in its own file (`<db>-search`) and is written by its own
//!   thread, so indexing runs on the second core beside the main writer. The
//!   main writer records what needs indexing in `search_pending` (in the main
//!   database, in the same transaction as the task), so a crash never loses
//!   work; the search file can always be rebuilt from the main database.
//! * A task is indexed once it is final, or once its text has been pending
//!   for [`INDEX_DELAY`]: most tasks finish sooner and are indexed once. The
//!   search index therefore trails ingest by at most about two seconds.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, params};

use cnc_model::{StoreResult, Task};

use super::error::map_err;

/// How long non-final tasks wait before their text is indexed.
pub(crate) const INDEX_DELAY: Duration = Duration::from_millis(1200);
/// How often the indexer looks for work.
const TICK: Duration = Duration::from_millis(200);
/// Most documents indexed per transaction.
const CHUNK: usize = 20_000;
const HASH_BITS: u32 = 24;

/// Distinct trigram hashes of an already lower-cased text.
pub(crate) fn trigram_hashes(lower: &str) -> HashSet<u32> {
    let chars: Vec<char> = lower.chars().collect();
    let mut set = HashSet::with_capacity(chars.len());
    for w in chars.windows(3) {
        // FNV-1a over the three code points.
        let mut h: u32 = 0x811c_9dc5;
        for c in w {
            h ^= *c as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        set.insert(h >> (32 - HASH_BITS));
    }
    set
}

fn word(out: &mut String, h: u32) {
    let _ = write!(out, "t{h:06x}");
}

/// The FTS document for a task's lower-cased search text.
pub(crate) fn document(lower: &str) -> String {
    let set = trigram_hashes(lower);
    let mut out = String::with_capacity(set.len() * 8);
    for h in set {
        word(&mut out, h);
        out.push(' ');
    }
    out
}

/// The FTS query for a lower-cased needle, or None when it is shorter than
/// three characters (no trigram: the caller scans instead).
pub(crate) fn query(lower_needle: &str) -> Option<String> {
    let set = trigram_hashes(lower_needle);
    if set.is_empty() {
        return None;
    }
    let mut hashes: Vec<u32> = set.into_iter().collect();
    hashes.sort_unstable();
    let mut out = String::new();
    for (i, h) in hashes.into_iter().enumerate() {
        if i > 0 {
            out.push_str(" AND ");
        }
        word(&mut out, h);
    }
    Some(out)
}

/// Lower-cased search text of a task, the exact form searches compare with.
pub(crate) fn search_text_lower(task: &Task) -> String {
    task.search_text().to_lowercase()
}

/// Path of the search index next to the main database.
pub(crate) fn search_path(main: &Path) -> PathBuf {
    let mut s = main.as_os_str().to_owned();
    s.push("-search");
    PathBuf::from(s)
}

const SEARCH_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS search_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS task_fts USING fts5(
    doc, tokenize = 'ascii', content = '', contentless_delete = 1, detail = none
);
";

/// Open (or create, or rebuild) the search file for a main database of
/// `generation`. Returns true when it was (re)created empty, meaning every
/// task must be indexed again.
pub(crate) fn open_search_file(path: &Path, generation: &str) -> StoreResult<(Connection, bool)> {
    let open = || -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )?;
        Ok(conn)
    };
    let check = |conn: &Connection| -> rusqlite::Result<Option<String>> {
        conn.execute_batch(SEARCH_SCHEMA)?;
        let g: Option<String> = conn
            .query_row(
                "SELECT value FROM search_meta WHERE key = 'generation'",
                [],
                |r| r.get(0),
            )
            .ok();
        Ok(g)
    };
    let fresh = match open().and_then(|c| check(&c).map(|g| (c, g))) {
        Ok((conn, Some(g))) if g == generation => return tune(conn).map(|c| (c, false)),
        Ok((conn, _)) => {
            drop(conn);
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, path = %path.display(), "search index unreadable; rebuilding it");
            true
        }
    };
    debug_assert!(fresh);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let conn = open().map_err(map_err)?;
    conn.execute_batch(SEARCH_SCHEMA).map_err(map_err)?;
    conn.execute(
        "INSERT OR REPLACE INTO search_meta (key, value) VALUES ('generation', ?1)",
        [generation],
    )
    .map_err(map_err)?;
    tune(conn).map(|c| (c, true))
}

fn tune(conn: Connection) -> StoreResult<Connection> {
    // Measured: a larger pending-terms hash and pages, with merges kept
    // moderate, double the indexing rate.
    conn.execute_batch(
        "INSERT INTO task_fts(task_fts, rank) VALUES('pgsz', 4000);
         INSERT INTO task_fts(task_fts, rank) VALUES('automerge', 8);
         INSERT INTO task_fts(task_fts, rank) VALUES('hashsize', 16777216);",
    )
    .map_err(map_err)?;
    Ok(conn)
}

/// Commands to the indexer thread.
pub(crate) enum IndexCmd {
    /// Remove these tasks from the index (cleanup).
    Delete(Vec<i64>),
    /// Empty the index (purge); reply when done.
    Clear(mpsc::Sender<()>),
    /// Index everything pending now, whatever its age; reply when done.
    Flush(mpsc::Sender<()>),
    /// Stop after finishing the current step.
    Stop,
}

/// Figures the indexer keeps, readable from any thread.
#[derive(Debug, Default)]
pub(crate) struct IndexStats {
    /// Documents indexed since start.
    pub indexed: AtomicU64,
    /// Set when the last step failed.
    pub failing: AtomicBool,
}

/// Handle to the indexer thread.
pub(crate) struct Indexer {
    tx: mpsc::Sender<IndexCmd>,
    handle: Option<thread::JoinHandle<()>>,
    pub stats: Arc<IndexStats>,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Indexer {
    /// Start the indexer over the search connection, reading pending work
    /// through `main` (a read-only connection to the main database).
    pub(crate) fn start(
        search: Connection,
        main: Connection,
        acked: Arc<Mutex<Vec<(i64, i64)>>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(IndexStats::default());
        let worker = IndexerLoop {
            search,
            main,
            acked,
            stats: stats.clone(),
            taken: HashSet::new(),
        };
        let handle = thread::Builder::new()
            .name("cnc-sqlite-search".into())
            .spawn(move || worker.run(rx))
            .ok();
        if handle.is_none() {
            tracing::error!("could not start the search indexer thread; search will not update");
        }
        Self { tx, handle, stats }
    }

    /// A sender for commands, for the writer.
    pub(crate) fn sender(&self) -> mpsc::Sender<IndexCmd> {
        self.tx.clone()
    }

    /// Send a command (ignored once the thread has stopped).
    pub(crate) fn send(&self, cmd: IndexCmd) {
        let _ = self.tx.send(cmd);
    }

    /// Index everything pending and wait for it.
    pub(crate) fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(IndexCmd::Flush(tx));
        let _ = rx.recv_timeout(Duration::from_secs(120));
    }

    /// Empty the index and wait for it.
    pub(crate) fn clear(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(IndexCmd::Clear(tx));
        let _ = rx.recv_timeout(Duration::from_secs(120));
    }

    /// Stop the thread and wait for it.
    pub(crate) fn stop(&mut self) {
        self.send(IndexCmd::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct IndexerLoop {
    search: Connection,
    main: Connection,
    acked: Arc<Mutex<Vec<(i64, i64)>>>,
    stats: Arc<IndexStats>,
    /// `(seq, version)` indexed but not yet acknowledged by the writer.
    taken: HashSet<(i64, i64)>,
}

impl IndexerLoop {
    fn run(mut self, rx: mpsc::Receiver<IndexCmd>) {
        let mut last = Instant::now();
        loop {
            let wait = TICK.saturating_sub(last.elapsed());
            match rx.recv_timeout(wait) {
                Ok(IndexCmd::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.step(false);
                    return;
                }
                Ok(IndexCmd::Delete(seqs)) => {
                    let r = self.delete(&seqs);
                    self.report(r);
                }
                Ok(IndexCmd::Clear(done)) => {
                    let r = self
                        .search
                        .execute_batch("DELETE FROM task_fts;")
                        .map_err(map_err);
                    self.taken.clear();
                    self.report(r);
                    let _ = done.send(());
                }
                Ok(IndexCmd::Flush(done)) => {
                    loop {
                        match self.step(true) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => {
                                self.report::<()>(Err(e));
                                break;
                            }
                        }
                    }
                    let _ = done.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if last.elapsed() >= TICK {
                let r = self.step(false);
                self.report(r.map(|_| ()));
                last = Instant::now();
            }
        }
    }

    fn report<T>(&self, r: StoreResult<T>) {
        match r {
            Ok(_) => {
                if self.stats.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("search indexer recovered");
                }
            }
            Err(err) => {
                if !self.stats.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %err, "search indexer step failed; will retry");
                }
            }
        }
    }

    fn delete(&mut self, seqs: &[i64]) -> StoreResult<()> {
        let tx = self.search.transaction().map_err(map_err)?;
        {
            let mut st = tx
                .prepare_cached("DELETE FROM task_fts WHERE rowid = ?1")
                .map_err(map_err)?;
            for s in seqs {
                st.execute([s]).map_err(map_err)?;
            }
        }
        tx.commit().map_err(map_err)
    }

    /// Index one chunk of due work; returns how many documents it indexed.
    fn step(&mut self, all: bool) -> StoreResult<usize> {
        // Forget what the writer has acknowledged meanwhile.
        if !self.taken.is_empty() {
            let still: HashSet<(i64, i64)> = self
                .main
                .prepare_cached("SELECT seq, ver FROM search_pending")
                .and_then(|mut st| {
                    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()
                })
                .map_err(map_err)?;
            self.taken.retain(|k| still.contains(k));
        }
        let cutoff = if all {
            f64::INFINITY
        } else {
            cnc_model::now() - INDEX_DELAY.as_secs_f64()
        };
        let due: Vec<(i64, i64, String)> = self
            .main
            .prepare_cached(
                "SELECT p.seq, p.ver, t.body FROM search_pending p JOIN tasks t ON t.seq = p.seq
                 WHERE p.since <= ?1 OR t.state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'REJECTED')
                 ORDER BY p.seq LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![cutoff, (CHUNK + self.taken.len()) as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()
            })
            .map_err(map_err)?;
        let due: Vec<_> = due
            .into_iter()
            .filter(|(s, v, _)| !self.taken.contains(&(*s, *v)))
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let mut done = Vec::with_capacity(due.len());
        let tx = self.search.transaction().map_err(map_err)?;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM task_fts WHERE rowid = ?1")
                .map_err(map_err)?;
            let mut ins = tx
                .prepare_cached("INSERT INTO task_fts (rowid, doc) VALUES (?1, ?2)")
                .map_err(map_err)?;
            for (seq, ver, body) in &due {
                let doc = match serde_json::from_str::<Task>(body) {
                    Ok(task) => document(&search_text_lower(&task)),
                    Err(err) => {
                        tracing::warn!(seq, error = %err, "unreadable task body; not indexed");
                        String::new()
                    }
                };
                // A task indexed before (its text changed since) is replaced.
                del.execute([seq]).map_err(map_err)?;
                ins.execute(params![seq, doc]).map_err(map_err)?;
                done.push((*seq, *ver));
            }
        }
        tx.commit().map_err(map_err)?;
        let n = done.len();
        self.stats.indexed.fetch_add(n as u64, Ordering::Relaxed);
        self.taken.extend(done.iter().copied());
        self.acked.lock().extend(done);
        Ok(n)
    }
}

/// Open a read-only connection to the main database for the indexer.
pub(crate) fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(map_err)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(map_err)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_are_a_subset_of_the_document_words() {
        let text = "app.tasks.send_email\n(42, 'user42@example.com')".to_lowercase();
        let document = document(&text);
        let doc: HashSet<&str> = document.split_whitespace().collect();
        for needle in ["user42@", "send_email", "42, 'u", "app"] {
            let q = query(needle).expect("3+ chars");
            for w in q.split(" AND ") {
                assert!(doc.contains(w), "{needle}: {w} missing");
            }
        }
        assert!(query("ab").is_none());
        assert!(query("").is_none());
    }

    #[test]
    fn unicode_trigrams_count_characters_not_bytes() {
        assert_eq!(trigram_hashes("日本語").len(), 1);
        assert_eq!(trigram_hashes("日本").len(), 0);
    }
}
