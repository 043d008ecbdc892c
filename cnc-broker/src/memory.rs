//! An in-process broker for tests of the code above the broker layer (web
//! UI, orchestrator): queues are vectors, events are a broadcast you feed
//! with [`MemoryBroker::emit`], control requests are answered by a
//! responder you install with [`MemoryBroker::set_responder`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cnc_model::Event;
use tokio::sync::broadcast;

use crate::api::{
    BroadcastOptions, Broker, BrokerKind, Capabilities, PurgeFilter, QueueDepth, ResultBackend,
    TaskResult, WorkerReply,
};
use crate::error::{BrokerError, BrokerResult};
use crate::protocol::control::ControlRequest;
use crate::protocol::names::priority_bucket;
use crate::protocol::{EventBatch, Message};
use crate::stream::{EventStream, EventStreamOptions};

/// Answers a control request: returns the replies of the simulated workers.
pub type Responder = Arc<dyn Fn(&ControlRequest) -> Vec<WorkerReply> + Send + Sync>;

#[derive(Default)]
struct State {
    /// Per queue: messages, oldest first.
    queues: BTreeMap<String, Vec<Message>>,
    /// Every control request seen, in order.
    requests: Vec<ControlRequest>,
}

/// The in-memory broker. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    responder: Arc<Mutex<Option<Responder>>>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(65_536);
        Self {
            state: Arc::new(Mutex::new(State::default())),
            events,
            responder: Arc::new(Mutex::new(None)),
        }
    }

    /// Deliver an event to every open stream. Returns how many streams got it.
    pub fn emit(&self, event: Event) -> usize {
        self.events.send(event).unwrap_or(0)
    }

    /// Install the function that answers control requests.
    pub fn set_responder(&self, f: Responder) {
        if let Ok(mut r) = self.responder.lock() {
            *r = Some(f);
        }
    }

    /// Every control request broadcast so far.
    pub fn requests(&self) -> Vec<ControlRequest> {
        self.state
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// The messages waiting in `queue`, oldest first.
    pub fn messages(&self, queue: &str) -> Vec<Message> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.queues.get(queue).cloned())
            .unwrap_or_default()
    }

    fn lock(&self) -> BrokerResult<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| BrokerError::connection("memory broker state poisoned"))
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Memory
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            consumer_count: false,
            broker_queue_discovery: true,
            atomic_selective_purge: true,
        }
    }

    fn redacted_url(&self) -> String {
        "memory://".to_owned()
    }

    async fn events(&self, opts: EventStreamOptions) -> BrokerResult<EventStream> {
        let mut rx = self.events.subscribe();
        let (sink, mut stream) = EventStream::channel(&opts);
        stream.attach(tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let batch = EventBatch {
                            events: vec![ev],
                            errors: Vec::new(),
                        };
                        if !sink.deliver(Ok(batch)) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => sink.lost(n),
                    Err(broadcast::error::RecvError::Closed) => {
                        sink.fail(BrokerError::connection("memory broker closed"));
                        return;
                    }
                }
            }
        }));
        Ok(stream)
    }

    async fn send_task(&self, queue: &str, mut message: Message) -> BrokerResult<()> {
        if queue.is_empty() {
            return Err(BrokerError::invalid_input("empty queue name"));
        }
        message.properties.delivery_info.routing_key = queue.to_owned();
        self.lock()?
            .queues
            .entry(queue.to_owned())
            .or_default()
            .push(message);
        Ok(())
    }

    async fn broadcast(
        &self,
        request: &ControlRequest,
        opts: &BroadcastOptions,
    ) -> BrokerResult<Vec<WorkerReply>> {
        self.lock()?.requests.push(request.clone());
        if !opts.reply {
            return Ok(Vec::new());
        }
        let responder = self.responder.lock().ok().and_then(|r| r.clone());
        let mut replies = responder.map(|f| f(request)).unwrap_or_default();
        if let Some(dest) = &request.destination {
            replies.retain(|r| dest.contains(&r.hostname));
        }
        if let Some(limit) = opts.limit {
            replies.truncate(limit);
        }
        Ok(replies)
    }

    async fn queue_depth(&self, queue: &str) -> BrokerResult<QueueDepth> {
        let st = self.lock()?;
        let msgs = st.queues.get(queue).map(Vec::as_slice).unwrap_or_default();
        let mut by = [0u64; 4];
        for m in msgs {
            let b = priority_bucket(m.properties.priority.unwrap_or(0));
            by[usize::from(b / 3).min(3)] += 1;
        }
        Ok(QueueDepth {
            queue: queue.to_owned(),
            messages: msgs.len() as u64,
            by_priority: Some(by),
            consumers: None,
        })
    }

    async fn discover_queues(&self) -> BrokerResult<Vec<String>> {
        Ok(self.lock()?.queues.keys().cloned().collect())
    }

    async fn purge(&self, queue: &str, filter: &PurgeFilter) -> BrokerResult<u64> {
        let mut st = self.lock()?;
        let Some(msgs) = st.queues.get_mut(queue) else {
            return Ok(0);
        };
        let before = msgs.len();
        msgs.retain(|m| !filter.matches(m));
        Ok((before - msgs.len()) as u64)
    }

    async fn healthcheck(&self) -> BrokerResult<()> {
        Ok(())
    }
}

/// An in-memory result backend.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    results: Arc<Mutex<HashMap<String, TaskResult>>>,
}

impl MemoryBackend {
    /// Store (or replace) a result.
    pub fn store(&self, result: TaskResult) {
        if let Ok(mut m) = self.results.lock() {
            m.insert(result.task_id.clone(), result);
        }
    }

    fn lock(&self) -> BrokerResult<std::sync::MutexGuard<'_, HashMap<String, TaskResult>>> {
        self.results
            .lock()
            .map_err(|_| BrokerError::connection("memory backend poisoned"))
    }
}

#[async_trait]
impl ResultBackend for MemoryBackend {
    fn redacted_url(&self) -> String {
        "memory://".to_owned()
    }

    async fn get(&self, task_id: &str) -> BrokerResult<Option<TaskResult>> {
        Ok(self.lock()?.get(task_id).cloned())
    }

    async fn list(&self, limit: usize) -> BrokerResult<Vec<TaskResult>> {
        Ok(self.lock()?.values().take(limit).cloned().collect())
    }

    async fn delete(&self, task_id: &str) -> BrokerResult<bool> {
        Ok(self.lock()?.remove(task_id).is_some())
    }

    async fn delete_by_name(&self, name: &str) -> BrokerResult<u64> {
        let mut m = self.lock()?;
        let before = m.len();
        m.retain(|_, r| r.name.as_deref() != Some(name));
        Ok((before - m.len()) as u64)
    }

    async fn delete_all(&self) -> BrokerResult<u64> {
        let mut m = self.lock()?;
        let n = m.len() as u64;
        m.clear();
        Ok(n)
    }

    async fn healthcheck(&self) -> BrokerResult<()> {
        Ok(())
    }

    /// Celery's semantics: a stored `SUCCESS` stays, anything else becomes
    /// the plain `ABORTED` meta.
    async fn mark_aborted(&self, task_id: &str) -> BrokerResult<()> {
        let mut m = self.lock()?;
        if m.get(task_id).is_some_and(|r| r.status == "SUCCESS") {
            return Ok(());
        }
        let raw: serde_json::Value = serde_json::from_str(&crate::api::aborted_meta(task_id))
            .map_err(|e| BrokerError::decode(format!("aborted meta: {e}")))?;
        if let Some(r) = TaskResult::from_redis_value(task_id, raw) {
            m.insert(task_id.to_owned(), r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnc_model::{TaskEvent, TaskEventKind};

    fn msg(task: &str, priority: u8) -> Message {
        let mut m = Message::json(b"[[], {}, {}]".to_vec());
        m.headers.insert("task".into(), task.into());
        m.properties.priority = Some(priority);
        m
    }

    #[tokio::test]
    async fn queues_purge_and_events() {
        let b = MemoryBroker::new();
        b.send_task("q", msg("a", 0)).await.ok();
        b.send_task("q", msg("b", 9)).await.ok();
        b.send_task("q", msg("a", 5)).await.ok();
        let d = b.queue_depth("q").await.ok();
        assert_eq!(d.as_ref().map(|d| d.messages), Some(3));
        assert_eq!(d.and_then(|d| d.by_priority), Some([1, 1, 0, 1]));
        assert_eq!(
            b.purge("q", &PurgeFilter::TaskName("a".into())).await.ok(),
            Some(2)
        );
        assert_eq!(b.messages("q").len(), 1);
        let mut s = b.events(EventStreamOptions::default()).await.ok();
        let ev = Event::Task(TaskEvent::new(TaskEventKind::Started, "t1", 1.0));
        assert_eq!(b.emit(ev.clone()), 1);
        let got = match s.as_mut() {
            Some(s) => s.next().await,
            None => None,
        };
        assert!(matches!(got, Some(Ok(e)) if e == ev));
    }

    fn result(id: &str, status: &str) -> TaskResult {
        TaskResult {
            task_id: id.into(),
            status: status.into(),
            result: serde_json::json!(5),
            traceback: Some("tb".into()),
            date_done: Some("2026-01-01T00:00:00".into()),
            name: Some("cnc.add".into()),
            raw: serde_json::json!({}),
        }
    }

    /// Celery's rule: a stored SUCCESS is kept; any other state, or no
    /// result at all, becomes the plain ABORTED meta.
    #[tokio::test]
    async fn mark_aborted_keeps_success_and_replaces_the_rest() {
        let b = MemoryBackend::default();
        b.store(result("done", "SUCCESS"));
        b.store(result("running", "STARTED"));
        b.store(result("failed", "FAILURE"));
        for id in ["done", "running", "failed", "unknown"] {
            assert!(b.mark_aborted(id).await.is_ok(), "{id}");
        }
        let get = |id: &str| {
            let b = b.clone();
            let id = id.to_owned();
            async move { b.get(&id).await.ok().flatten() }
        };
        assert_eq!(get("done").await, Some(result("done", "SUCCESS")));
        for id in ["running", "failed", "unknown"] {
            let r = get(id).await;
            let r = r.as_ref();
            assert_eq!(r.map(|r| r.status.as_str()), Some("ABORTED"), "{id}");
            assert_eq!(r.map(|r| &r.result), Some(&serde_json::Value::Null));
            assert_eq!(r.and_then(|r| r.traceback.clone()), None);
            assert_eq!(r.and_then(|r| r.date_done.clone()), None);
            assert_eq!(r.and_then(|r| r.name.clone()), None);
            assert_eq!(
                r.map(|r| r.raw.clone()),
                Some(serde_json::json!({"status": "ABORTED", "result": null,
                    "traceback": null, "children": null, "date_done": null,
                    "task_id": id}))
            );
        }
        // Twice is the same as once.
        assert!(b.mark_aborted("unknown").await.is_ok());
        assert_eq!(
            get("unknown").await.map(|r| r.status),
            Some("ABORTED".into())
        );
    }

    /// A backend that does not override `mark_aborted` says it cannot.
    #[tokio::test]
    async fn mark_aborted_defaults_to_unsupported() {
        #[derive(Debug)]
        struct ReadOnly;
        #[async_trait]
        impl ResultBackend for ReadOnly {
            fn redacted_url(&self) -> String {
                "custom://".into()
            }
            async fn get(&self, _: &str) -> BrokerResult<Option<TaskResult>> {
                Ok(None)
            }
            async fn list(&self, _: usize) -> BrokerResult<Vec<TaskResult>> {
                Ok(Vec::new())
            }
            async fn delete(&self, _: &str) -> BrokerResult<bool> {
                Ok(false)
            }
            async fn delete_by_name(&self, _: &str) -> BrokerResult<u64> {
                Ok(0)
            }
            async fn delete_all(&self) -> BrokerResult<u64> {
                Ok(0)
            }
            async fn healthcheck(&self) -> BrokerResult<()> {
                Ok(())
            }
        }
        let e = ReadOnly.mark_aborted("t1").await.err();
        assert_eq!(
            e.as_ref().map(BrokerError::kind),
            Some(crate::ErrorKind::Unsupported)
        );
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("t1") && msg.contains("custom://"), "{msg}");
    }
}
