//! Task id -> `seq` lookups without a random-order index write per new task.
//!
//! Celery task ids are random UUIDs. A B-tree index on them (schema v1-v3's
//! `tasks_id`) puts every new task on a random leaf page, so each batch of
//! new tasks dirties about one page per task, and every dirty page is a 4 KiB
//! frame in the WAL. Measured at 300,000 tasks, that index (with the old
//! `(name, runtime)` one) was a third of the writer's WAL volume and of its
//! time.
//!
//! Schema v4 keeps the index in two levels, like an LSM tree:
//!
//! * `task_ids (id PRIMARY KEY, seq) WITHOUT ROWID` holds the ids of every
//!   task with `seq <= meta.ids_merged_seq`, plus some above it (a merge in
//!   progress);
//! * the ids of newer tasks live in memory ([`TaskIds`]), shared by the
//!   writer and the readers of this process, and are rebuilt at start from
//!   `tasks WHERE seq > ids_merged_seq` (a range of the rowid, so cheap).
//!
//! Once `id_merge_at` ids (default [`MERGE_AT`]) wait in memory, the writer merges them into
//! `task_ids` in [`MERGE_CHUNKS`] sorted key ranges, one range inside each
//! following batch's transaction: a range's ids land on neighbouring pages,
//! so a merged id costs a fraction of a page instead of one. After the last
//! range, `ids_merged_seq` moves up in the same transaction.
//!
//! Lookup order matters for readers, which do not share the writer's
//! transaction: the memory level first, then `task_ids` in a statement of its
//! own (a fresh snapshot). The writer removes ids from memory only after the
//! transaction that merged them committed, so a reader that misses in memory
//! finds the id in `task_ids`.
//!
//! A read-only store (another process next to the running service) has no
//! memory level: it looks in `task_ids`, then scans the unmerged tail of
//! `tasks` (at most about [`MERGE_AT`] rows plus a batch, by rowid).
//!
//! Databases before v4 (only seen between the steps of a manual `migrate`)
//! still have `tasks_id`, used as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::RwLock;
use rusqlite::{Connection, OptionalExtension};

/// Ids waiting in memory that start a merge round (the default of
/// `SqliteConfig::id_merge_at`).
pub(crate) const MERGE_AT: usize = 100_000;
/// Sorted key ranges a merge round is cut into (one per batch).
pub(crate) const MERGE_CHUNKS: usize = 64;
/// The `meta` key holding the highest `seq` whose id is in `task_ids`.
pub(crate) const MERGED_KEY: &str = "ids_merged_seq";

/// How ids are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Schema before v4: the `tasks_id` index.
    Legacy = 0,
    /// This process's writer keeps the memory level.
    Live = 1,
    /// Read-only: `task_ids`, then a scan of the unmerged tail.
    Tail = 2,
}

/// The in-memory level of the id index, shared by the writer and readers.
#[derive(Debug)]
pub(crate) struct TaskIds {
    recent: RwLock<HashMap<Box<str>, i64>>,
    mode: AtomicU8,
    read_only: bool,
    merge_at: usize,
}

impl TaskIds {
    /// An empty level; the writer's first reload sets the mode.
    pub(crate) fn new(read_only: bool, merge_at: usize) -> Self {
        Self {
            recent: RwLock::new(HashMap::new()),
            mode: AtomicU8::new(Mode::Legacy as u8),
            read_only,
            merge_at,
        }
    }

    /// Ids in memory that start a merge round.
    pub(crate) fn merge_at(&self) -> usize {
        self.merge_at
    }

    /// Opened read-only: no memory level ([`Mode::Tail`]).
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Legacy,
            1 => Mode::Live,
            _ => Mode::Tail,
        }
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Release);
    }

    /// The `seq` of task `id`, if stored.
    pub(crate) fn lookup(&self, conn: &Connection, id: &str) -> rusqlite::Result<Option<i64>> {
        match self.mode() {
            Mode::Legacy => conn
                .prepare_cached("SELECT seq FROM tasks WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional(),
            Mode::Live => {
                if let Some(seq) = self.recent.read().get(id) {
                    return Ok(Some(*seq));
                }
                merged_lookup(conn, id)
            }
            Mode::Tail => {
                if let Some(seq) = merged_lookup(conn, id)? {
                    return Ok(Some(seq));
                }
                conn.prepare_cached(
                    "SELECT seq FROM tasks WHERE seq > coalesce(
                        (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'ids_merged_seq'), 0)
                     AND id = ?1",
                )?
                .query_row([id], |r| r.get(0))
                .optional()
            }
        }
    }

    /// The in-memory `seq` of `id` (the writer checks it before merging).
    pub(crate) fn recent(&self, id: &str) -> Option<i64> {
        self.recent.read().get(id).copied()
    }

    /// Ids waiting in memory.
    pub(crate) fn pending(&self) -> usize {
        self.recent.read().len()
    }

    /// Add ids of committed new tasks.
    pub(crate) fn add(&self, ids: impl IntoIterator<Item = (String, i64)>) {
        let mut m = self.recent.write();
        for (id, seq) in ids {
            m.insert(id.into_boxed_str(), seq);
        }
    }

    /// Forget ids whose merge into `task_ids` committed (only where memory
    /// still holds the merged `seq`).
    pub(crate) fn merged(&self, ids: &[(Box<str>, i64)]) {
        let mut m = self.recent.write();
        for (id, seq) in ids {
            if m.get(id) == Some(seq) {
                m.remove(id);
            }
        }
    }

    /// Forget deleted tasks.
    pub(crate) fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut m = self.recent.write();
        for id in ids {
            m.remove(id);
        }
    }

    /// Replace the memory level (start, reload).
    pub(crate) fn replace(&self, ids: HashMap<Box<str>, i64>) {
        *self.recent.write() = ids;
    }

    /// A sorted snapshot of the ids with `seq <= upto`, for a merge round.
    pub(crate) fn sorted_upto(&self, upto: i64) -> Vec<(Box<str>, i64)> {
        let mut v: Vec<(Box<str>, i64)> = self
            .recent
            .read()
            .iter()
            .filter(|(_, s)| **s <= upto)
            .map(|(id, s)| (id.clone(), *s))
            .collect();
        v.sort_unstable();
        v
    }
}

fn merged_lookup(conn: &Connection, id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT seq FROM task_ids WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

/// A merge of the memory level into `task_ids` in progress.
#[derive(Debug)]
pub(crate) struct MergeRound {
    /// Ids (sorted) with `seq <= upto` when the round started.
    pub(crate) ids: Vec<(Box<str>, i64)>,
    /// Every id with `seq <= upto` is merged once the round ends.
    pub(crate) upto: i64,
    /// Index into `ids` of the next range.
    pub(crate) next: usize,
    /// Ids per range.
    pub(crate) chunk: usize,
}

impl MergeRound {
    /// A round over the memory level's ids up to `upto`.
    pub(crate) fn start(ids: &TaskIds, upto: i64) -> Self {
        let v = ids.sorted_upto(upto);
        let chunk = v.len().div_ceil(MERGE_CHUNKS).max(1);
        Self {
            ids: v,
            upto,
            next: 0,
            chunk,
        }
    }

    /// The next range and whether it is the last.
    pub(crate) fn next_range(&self) -> (std::ops::Range<usize>, bool) {
        let end = (self.next + self.chunk).min(self.ids.len());
        (self.next..end, end >= self.ids.len())
    }
}
