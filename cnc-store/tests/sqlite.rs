//! SQLite-specific behaviour: migration of real v1 data, refusal of newer
//! schemas, locked and full databases, crash safety, persistence, search.
#![cfg(feature = "sqlite")]

use std::path::PathBuf;

use cnc_core::{
    DbController, Event, StoreErrorKind, TaskEvent, TaskEventKind as K, TaskFilter, TaskQuery,
    TaskState,
};
use cnc_store::sqlite::{SqliteConfig, SqliteStore};

fn temp_db() -> PathBuf {
    tempfile::Builder::new()
        .prefix("cnc-sqlite-")
        .tempdir()
        .expect("temp dir")
        .keep()
        .join("cnc.db")
}

fn ev(kind: K, id: &str, ts: f64) -> Event {
    let mut e = TaskEvent::new(kind, id, ts).with_hostname("w1@host");
    e.clock = (ts * 1000.0) as u64;
    Event::Task(e)
}

fn search(s: &str) -> TaskQuery {
    TaskQuery::newest(
        TaskFilter {
            search: Some(s.into()),
            ..TaskFilter::default()
        },
        100,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_is_searchable_after_flush() {
    let store = SqliteStore::open_path(temp_db()).await.expect("open");
    let mut big = String::from("('NEEDLE-START-7f3a', '");
    while big.len() < 1_048_576 {
        big.push_str("lorem ipsum dolor sit amet 日本語 \u{1F680} ");
    }
    big.push_str("NEEDLE-END-MARKER-91c2')");
    let Event::Task(mut r) = ev(K::Received, "big-1", 1_700_000_000.0) else {
        unreachable!()
    };
    r.name = Some("etl.load".into());
    r.args = Some(big);
    store
        .apply(&[Event::Task(r), ev(K::Succeeded, "big-1", 1_700_000_001.0)])
        .await
        .expect("apply");
    store.flush_search().await.expect("flush");
    for needle in [
        "needle-end-marker-91c2",
        "NEEDLE-START-7f3a",
        "日本語 \u{1F680}",
    ] {
        let page = store.tasks(&search(needle)).await.expect("search");
        assert_eq!(page.tasks.len(), 1, "{needle}");
    }
}
