//! Shared real-worker checks, run by `redis_workers.rs` and `amqp_workers.rs`
//! against their broker (the object_store pattern: plain async fns over
//! `&dyn Broker`).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cnc_broker::protocol::task::SendTask;
use cnc_broker::{
    Broker, ControlClient, EventStreamOptions, PurgeFilter, ResultBackend, Target, WorkerReply,
};
use cnc_model::{Event, TaskEventKind};
use cnc_testsupport::{CeleryWorker, WorkerOpts};
use serde_json::{Value, json};

/// Events seen so far, filled by a background task.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<Event>>>);

impl Seen {
    /// Start collecting from a new stream of `broker`.
    pub async fn collect(broker: &Arc<dyn Broker>) -> (Self, Arc<cnc_broker::StreamStats>) {
        let opts = EventStreamOptions::default();
        let stats = opts.stats.clone();
        let mut stream = broker.events(opts).await.expect("subscribe");
        let seen = Self::default();
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                if let Ok(ev) = item {
                    s2.0.lock().expect("lock").push(ev);
                }
            }
        });
        (seen, stats)
    }

    /// Wait until an event matching `pred` was seen; return it.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.0.lock().expect("lock").iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for task event `kind` of task `id`.
    pub async fn task(
        &self,
        id: &str,
        kind: TaskEventKind,
        timeout: Duration,
    ) -> cnc_model::TaskEvent {
        let what = format!("{} of {id}", kind.as_str());
        match self
            .wait(
                &what,
                timeout,
                |e| matches!(e, Event::Task(t) if t.uuid == id && t.kind == kind),
            )
            .await
        {
            Event::Task(t) => t,
            _ => unreachable!(),
        }
    }
}

/// Send task `name` with `args` to `queue`; returns its id.
pub async fn send(broker: &Arc<dyn Broker>, name: &str, args: Vec<Value>, queue: &str) -> String {
    send_with(broker, SendTask::new(name).args(args).queue(queue)).await
}

/// Send a built task; returns its id.
pub async fn send_with(broker: &Arc<dyn Broker>, task: SendTask) -> String {
    let msg = task.build();
    broker
        .send_task(&msg.queue, msg.to_message())
        .await
        .expect("send task");
    msg.id
}

/// Poll the backend until the result of `id` has `status`.
pub async fn result(
    backend: &Arc<dyn ResultBackend>,
    id: &str,
    status: &str,
) -> cnc_broker::TaskResult {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = backend.get(id).await.expect("backend get") {
            if r.status == status {
                return r;
            }
        }
        assert!(Instant::now() < deadline, "no {status} result for {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hosts(replies: &[WorkerReply]) -> Vec<String> {
    let mut h: Vec<String> = replies.iter().map(|r| r.hostname.clone()).collect();
    h.sort();
    h
}

/// Start two workers in parallel (`w1` on `celery`, `w2` on `celery` and
/// `custom`).
pub async fn start_workers(
    tag: &str,
    broker: &str,
    backend: &str,
) -> (CeleryWorker, CeleryWorker, String, String) {
    let n1 = format!("w1@{tag}");
    let n2 = format!("w2@{tag}");
    let o1 = WorkerOpts::new(&n1, broker)
        .backend(backend)
        .queues(&["celery"]);
    let o2 = WorkerOpts::new(&n2, broker)
        .backend(backend)
        .queues(&["celery", "custom"]);
    let a = tokio::task::spawn_blocking(move || CeleryWorker::start(o1));
    let b = tokio::task::spawn_blocking(move || CeleryWorker::start(o2));
    let w1 = a.await.expect("join").expect("start w1");
    let w2 = b.await.expect("join").expect("start w2");
    (w1, w2, n1, n2)
}

fn pool_size(r: &WorkerReply) -> usize {
    r.payload
        .pointer("/pool/processes")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

async fn stats_of(ctl: &ControlClient, node: &str) -> WorkerReply {
    let r = ctl.stats(&Target::node(node)).await.expect("stats");
    r.into_iter().next().expect("a stats reply")
}

/// The whole real-worker suite against one broker + Redis backend.
/// `tag` makes names unique; `seen` must have been started before the
/// workers so `worker-online` is captured.
pub async fn suite(
    broker: Arc<dyn Broker>,
    backend: Arc<dyn ResultBackend>,
    seen: &Seen,
    n1: &str,
    n2: &str,
    tag: &str,
) {
    let long = Duration::from_secs(30);
    let ctl = ControlClient::new(broker.clone()).with_timeout(Duration::from_secs(3));
    let both = Target::Nodes(vec![n1.to_owned(), n2.to_owned()]);
    let mut names = vec![n1.to_owned(), n2.to_owned()];
    names.sort();

    // Worker events.
    for n in [n1, n2] {
        seen.wait("worker-online", long, |e| matches!(e, Event::Worker(w) if w.hostname == n && w.kind == cnc_model::WorkerEventKind::Online)).await;
        seen.wait("worker-heartbeat", long, |e| matches!(e, Event::Worker(w) if w.hostname == n && w.kind == cnc_model::WorkerEventKind::Heartbeat)).await;
    }

    // Inspect replies from both workers.
    assert_eq!(hosts(&ctl.ping(&both).await.expect("ping")), names);
    for r in ctl.ping(&both).await.expect("ping") {
        assert_eq!(r.payload, json!({"ok": "pong"}));
    }
    let stats = ctl.stats(&both).await.expect("stats");
    assert_eq!(hosts(&stats), names);
    assert!(stats.iter().all(|r| pool_size(r) == 2), "{stats:?}");
    let reg = ctl
        .registered(&both, &["rate_limit", "queue"])
        .await
        .expect("registered");
    assert_eq!(hosts(&reg), names);
    for r in &reg {
        let text = r.payload.to_string();
        assert!(
            text.contains("cnc.add") && text.contains("cnc.limited [rate_limit=10/m]"),
            "{text}"
        );
        assert!(text.contains("cnc.on_custom [queue=custom]"), "{text}");
    }
    let aq = ctl.active_queues(&both).await.expect("active_queues");
    assert_eq!(hosts(&aq), names);
    let conf = ctl.conf(&both, false).await.expect("conf");
    assert_eq!(hosts(&conf), names);
    assert!(
        conf.iter()
            .all(|r| r.payload.get("task_track_started") == Some(&json!(true))),
        "{conf:?}"
    );
    assert_eq!(ctl.clock(&both).await.expect("clock").len(), 2);
    let queues = ctl.active_queue_names(&Target::All).await.expect("queues");
    assert!(
        queues.contains(&"celery".to_owned()) && queues.contains(&"custom".to_owned()),
        "{queues:?}"
    );

    // A task runs and its result is in the backend.
    let id = send(&broker, "cnc.add", vec![json!(2), json!(3)], "celery").await;
    let r = result(&backend, &id, "SUCCESS").await;
    assert_eq!(r.result, json!(5));
    let rec = seen.task(&id, TaskEventKind::Received, long).await;
    assert_eq!(rec.name.as_deref(), Some("cnc.add"));
    assert_eq!(rec.args.as_deref(), Some("(2, 3)"));
    seen.task(&id, TaskEventKind::Started, long).await;
    let ok = seen.task(&id, TaskEventKind::Succeeded, long).await;
    assert_eq!(ok.result.as_deref(), Some("5"));
    assert!(
        backend
            .list(100)
            .await
            .expect("list")
            .iter()
            .any(|r| r.task_id == id)
    );

    // Unicode and hostile payloads round-trip through a real worker.
    let hostile =
        json!(["héllo ✓ 日本", "'); DROP TABLE x; --", {"k": [1, null, true]}, "\u{0}nul"]);
    let Value::Array(hargs) = hostile.clone() else {
        unreachable!()
    };
    let id_echo = send(&broker, "cnc.echo", hargs, "celery").await;
    let r = result(&backend, &id_echo, "SUCCESS").await;
    assert_eq!(r.result.get("args"), Some(&hostile));

    // Custom queue: only w2 consumes it.
    let id_c = send(&broker, "cnc.on_custom", vec![json!(7)], "custom").await;
    let ev = seen.task(&id_c, TaskEventKind::Succeeded, long).await;
    assert_eq!(ev.hostname.as_deref(), Some(n2));

    // Failure with traceback.
    let id_f = send(&broker, "cnc.fail_always", vec![json!("kaboom")], "celery").await;
    let failed = seen.task(&id_f, TaskEventKind::Failed, long).await;
    assert!(
        failed
            .exception
            .as_deref()
            .is_some_and(|e| e.contains("ValueError")),
        "{failed:?}"
    );
    assert!(
        failed
            .traceback
            .as_deref()
            .is_some_and(|t| t.contains("Traceback")),
        "{failed:?}"
    );
    let r = result(&backend, &id_f, "FAILURE").await;
    assert!(r.traceback.is_some());

    // Retry.
    let id_r = send(&broker, "cnc.retrying", vec![json!(1)], "celery").await;
    let retried = seen.task(&id_r, TaskEventKind::Retried, long).await;
    assert!(
        retried
            .exception
            .as_deref()
            .is_some_and(|e| e.contains("transient")),
        "{retried:?}"
    );

    // Revoke with terminate kills a sleeping task.
    let id_s = send(&broker, "cnc.sleep", vec![json!(60)], "celery").await;
    seen.task(&id_s, TaskEventKind::Started, long).await;
    let rv = ctl
        .revoke(&both, std::slice::from_ref(&id_s), true, Some("SIGKILL"))
        .await
        .expect("revoke");
    assert_eq!(rv.len(), 2, "{rv:?}");
    let revoked = seen.task(&id_s, TaskEventKind::Revoked, long).await;
    assert_eq!(revoked.terminated, Some(true), "{revoked:?}");
    let rl = ctl.revoked(&both).await.expect("revoked");
    assert!(
        rl.iter().all(|r| r.payload.to_string().contains(&id_s)),
        "{rl:?}"
    );

    // pool_grow / pool_shrink show in stats.
    let g = ctl.pool_grow(&Target::node(n1), 1).await.expect("grow");
    assert_eq!(g.len(), 1, "{g:?}");
    wait_pool(&ctl, n1, 3).await;
    let s = ctl.pool_shrink(&Target::node(n1), 1).await.expect("shrink");
    assert_eq!(s.len(), 1, "{s:?}");
    wait_pool(&ctl, n1, 2).await;

    // add_consumer makes w1 consume a new queue.
    let extra = format!("extra-{tag}");
    let ac = ctl
        .add_consumer(&Target::node(n1), &extra)
        .await
        .expect("add_consumer");
    assert!(ac[0].payload.to_string().contains("add consumer"), "{ac:?}");
    let id_x = send(&broker, "cnc.add", vec![json!(20), json!(22)], &extra).await;
    let ev = seen.task(&id_x, TaskEventKind::Succeeded, long).await;
    assert_eq!(ev.hostname.as_deref(), Some(n1));
    let cc = ctl
        .cancel_consumer(&Target::node(n1), &extra)
        .await
        .expect("cancel_consumer");
    assert_eq!(cc.len(), 1);

    // rate_limit takes effect: the task attribute changes.
    let rl = ctl
        .rate_limit(&both, "cnc.mul", "7/m")
        .await
        .expect("rate_limit");
    assert_eq!(rl.len(), 2, "{rl:?}");
    let reg = ctl
        .registered(&Target::node(n1), &["rate_limit"])
        .await
        .expect("registered");
    assert!(
        reg[0]
            .payload
            .to_string()
            .contains("cnc.mul [rate_limit=7/m]"),
        "{reg:?}"
    );
    ctl.rate_limit(&both, "cnc.mul", "0")
        .await
        .expect("rate_limit off");

    // time_limit: workers store the new limits on the task (shown by
    // `registered`), but Celery 5.7's prefork request class captured the
    // task's limits at start-up, so tasks do not get the new limit until
    // the consumer rebuilds its strategies (README 4c says "time limits set
    // successfully" without this caveat). The kill itself is checked with
    // the per-message limit our task builder sets.
    let tl = ctl
        .time_limit(&both, "cnc.sleep", Some(1.0), Some(0.5))
        .await
        .expect("time_limit");
    assert_eq!(tl.len(), 2, "{tl:?}");
    assert!(
        tl.iter()
            .all(|r| r.payload.to_string().contains("time limits set")),
        "{tl:?}"
    );
    let reg = ctl
        .registered(&Target::node(n1), &["time_limit", "soft_time_limit"])
        .await
        .expect("registered");
    assert!(
        reg[0]
            .payload
            .to_string()
            .contains("cnc.sleep [time_limit=1"),
        "{reg:?}"
    );
    let id_t = send_with(
        &broker,
        SendTask::new("cnc.sleep")
            .args(vec![json!(10)])
            .time_limit(1.0),
    )
    .await;
    let failed = seen.task(&id_t, TaskEventKind::Failed, long).await;
    assert!(
        // Celery reports a hard time limit as `ExceptionWithTraceback()`;
        // the name is only in the traceback.
        failed
            .traceback
            .as_deref()
            .is_some_and(|e| e.contains("TimeLimitExceeded")),
        "{failed:?}"
    );

    // Queue depth counts priority messages on a queue nobody consumes.
    let idle = format!("idle-{tag}");
    for p in [0u8, 5, 9] {
        send_with(
            &broker,
            SendTask::new("cnc.add")
                .args(vec![json!(1), json!(p)])
                .queue(&idle)
                .priority(p),
        )
        .await;
    }
    for _ in 0..2 {
        send(&broker, "cnc.mul", vec![json!(2), json!(2)], &idle).await;
    }
    let d = broker.queue_depth(&idle).await.expect("depth");
    assert_eq!(d.messages, 5, "{d:?}");
    if let Some(by) = d.by_priority {
        assert_eq!(by, [3, 1, 0, 1]);
    }
    if broker.capabilities().consumer_count {
        assert_eq!(d.consumers, Some(0));
    }
    // Purge by task name leaves the others.
    let n = broker
        .purge(&idle, &PurgeFilter::TaskName("cnc.add".into()))
        .await
        .expect("purge");
    assert_eq!(n, 3);
    assert_eq!(broker.queue_depth(&idle).await.expect("depth").messages, 2);
    assert_eq!(
        broker
            .purge(&idle, &PurgeFilter::GroupId("nope".into()))
            .await
            .expect("purge"),
        0
    );
    assert_eq!(
        broker.purge(&idle, &PurgeFilter::All).await.expect("purge"),
        2
    );
    assert_eq!(broker.queue_depth(&idle).await.expect("depth").messages, 0);

    // Result backend: delete one, then all.
    assert!(backend.delete(&id).await.expect("delete"));
    assert!(backend.get(&id).await.expect("get").is_none());
    assert!(backend.delete_all().await.expect("delete all") >= 1);
    broker.healthcheck().await.expect("health");
    backend.healthcheck().await.expect("backend health");

    // Shutdown w2 remotely: worker-offline arrives.
    ctl.shutdown(&Target::node(n2)).await.expect("shutdown");
    seen.wait("worker-offline", long, |e| matches!(e, Event::Worker(w) if w.hostname == n2 && w.kind == cnc_model::WorkerEventKind::Offline)).await;
}

async fn wait_pool(ctl: &ControlClient, node: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats_of(ctl, node).await;
        if pool_size(&s) == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pool of {node} never reached {n}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
