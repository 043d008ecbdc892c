//! Deterministic, realistic Celery event streams for tests and benchmarks.
//!
//! [`generate`] turns a [`GenConfig`] into the events a small Celery cluster
//! would emit: task lifecycles (`task-sent`, `task-received`, `task-started`,
//! then `task-succeeded`, `task-failed` with a traceback, retry cycles,
//! revocations and rejections), workflows (chains, groups and chords linked by
//! `root_id`, `parent_id`, `group_id` and `chord_id`) and worker
//! online/heartbeat/offline events. Payloads look like the ones
//! `shared/bench/gen_events.py` publishes (Python reprs with uids, emails,
//! words, trace ids and tenants), so text search and storage costs are
//! realistic.
//!
//! Everything comes from one seed through [`Rng`] (splitmix64): the same
//! config always gives the same events, on every platform. Timestamps are
//! whole microseconds (as `time.time()` gives them), so they survive any
//! storage that keeps microseconds.

use serde_json::{Map, Value};

use crate::model::{
    Event, TaskEvent, TaskEventKind, Timestamp, UnknownEvent, WorkerEvent, WorkerEventKind,
};

/// A tiny deterministic PRNG (splitmix64). Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x5DEE_CE66_D1CE_4E5B,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A random element of `items`, `None` when it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }

    /// Shuffle `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A random UUID v4 in its usual text form.
    pub fn uuid(&mut self) -> String {
        let hi = self.next_u64();
        let lo = self.next_u64();
        let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xFFFF,
            hi & 0xFFFF,
            lo >> 48,
            lo & 0xFFFF_FFFF_FFFF
        )
    }
}

/// The task names `gen_events.py` uses, most frequent first.
pub const BASE_TASK_NAMES: [&str; 10] = [
    "app.tasks.send_email",
    "app.tasks.sync_user",
    "search.tasks.index_document",
    "app.tasks.process_image",
    "notifications.tasks.push",
    "billing.tasks.charge_card",
    "reports.tasks.generate_report",
    "etl.tasks.load_batch",
    "app.tasks.cleanup_sessions",
    "crm.tasks.update_contact",
];

/// Words payload text is made of.
pub const WORDS: [&str; 26] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
];

/// `n` distinct task names: the base names first, then `<module>.tasks.job_NNN`.
pub fn task_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match BASE_TASK_NAMES.get(i) {
            Some(name) => (*name).to_owned(),
            None => format!("mod{:02}.tasks.job_{:03}", i % 17, i),
        })
        .collect()
}

/// `n` worker node names (`celery@worker-NN.example.com`).
pub fn worker_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("celery@worker-{i:02}.example.com"))
        .collect()
}

/// Words joined by spaces, cut to `n` characters.
pub fn rand_text(rng: &mut Rng, n: usize) -> String {
    let mut out = String::with_capacity(n + 10);
    while out.len() < n {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(rng.pick(&WORDS).copied().unwrap_or("alpha"));
    }
    out.truncate(n);
    out
}

/// A positional-args repr like Celery's `argsrepr`: a uid, an email and a dict.
pub fn make_args(rng: &mut Rng, size: usize) -> String {
    let uid = rng.range(1_000_000, 10_000_000);
    let note = rand_text(rng, size.saturating_sub(80).max(20));
    format!(
        "({uid}, 'user{uid}@example.com', {{'note': '{note}', 'locale': 'en_US', 'retry_policy': 'default'}})"
    )
}

/// A keyword-args repr: priority, a 128-bit trace id, a tenant, a flag.
pub fn make_kwargs(rng: &mut Rng) -> String {
    let priority = rng
        .pick(&["low", "normal", "high"])
        .copied()
        .unwrap_or("low");
    let trace = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    let tenant = rng.range(1, 201);
    format!(
        "{{'priority': '{priority}', 'trace_id': '{trace}', 'tenant': 'tenant-{tenant:03}', 'dry_run': False}}"
    )
}

/// A result repr: status, a 64-bit id and some words.
pub fn make_result(rng: &mut Rng, size: usize) -> String {
    let id = rng.next_u64();
    let detail = rand_text(rng, size.saturating_sub(70).max(10));
    format!("{{'status': 'ok', 'id': '{id:016x}', 'detail': '{detail}'}}")
}

/// A Python traceback ending in a `requests` read timeout, for `name`.
pub fn make_traceback(rng: &mut Rng, name: &str) -> String {
    let module = name.split('.').next().unwrap_or("app");
    let func = name.rsplit('.').next().unwrap_or("run");
    let line = rng.range(20, 400);
    let host = rng.pick(&WORDS).copied().unwrap_or("alpha");
    format!(
        "Traceback (most recent call last):\n  File \"/usr/local/lib/python3.11/site-packages/celery/app/trace.py\", line 453, in trace_task\n    R = retval = fun(*args, **kwargs)\n  File \"/srv/app/{module}/tasks.py\", line {line}, in {func}\n    response = client.post(url, json=payload, timeout=10)\n  File \"/usr/local/lib/python3.11/site-packages/requests/adapters.py\", line 532, in send\n    raise ReadTimeout(e, request=request)\nrequests.exceptions.ReadTimeout: HTTPSConnectionPool(host='api.{host}.example.com', port=443): Read timed out. (read timeout=10)\n"
    )
}

/// The exception repr of a failed task.
pub const FAIL_EXCEPTION: &str = "ReadTimeout(\"HTTPSConnectionPool(host='api.example.com', port=443): Read timed out. (read timeout=10)\")";
/// The exception repr of a retried task.
pub const RETRY_EXCEPTION: &str = "Retry('Retry in 5s: ReadTimeout(...)')";

/// What [`generate`] produces.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Seed of everything.
    pub seed: u64,
    /// Tasks to generate (workflow members included; the last workflow may
    /// overshoot by a few).
    pub tasks: usize,
    /// Distinct task names (see [`task_names`]).
    pub task_names: usize,
    /// Workers (see [`worker_names`]); at least one is used.
    pub workers: usize,
    /// Time of the first task, epoch seconds.
    pub start: Timestamp,
    /// Seconds over which task start times spread.
    pub span: f64,
    /// Share of tasks that fail.
    pub fail_ratio: f64,
    /// Share of tasks that go through one or two retry cycles first.
    pub retry_ratio: f64,
    /// Share of tasks revoked (before start, or terminated while running).
    pub revoke_ratio: f64,
    /// Share of tasks rejected by the worker.
    pub reject_ratio: f64,
    /// Share of units that are workflows (chain, group or chord) instead of
    /// a single task.
    pub workflow_ratio: f64,
    /// Emit `task-sent` events (clients with `task_send_sent_event`).
    pub sent_events: bool,
    /// Seconds between worker heartbeats; 0 for none.
    pub heartbeat_interval: f64,
    /// Emit `worker-online` before the first task and `worker-offline` after
    /// the last.
    pub worker_events: bool,
    /// Approximate length of the args repr, characters.
    pub args_size: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            tasks: 200,
            task_names: 10,
            workers: 4,
            // 2026-01-05 00:00:00 UTC, a Monday.
            start: 1_767_571_200.0,
            span: 3600.0,
            fail_ratio: 0.1,
            retry_ratio: 0.1,
            revoke_ratio: 0.04,
            reject_ratio: 0.02,
            workflow_ratio: 0.15,
            sent_events: true,
            heartbeat_interval: 60.0,
            worker_events: true,
            args_size: 260,
        }
    }
}

/// The generated stream and what is in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    /// Every event, ascending by timestamp (Lamport clocks ascend with it).
    pub events: Vec<Event>,
    /// Task ids in order of their first event.
    pub task_ids: Vec<String>,
    /// Ids of workflow roots (chains, groups, chords).
    pub roots: Vec<String>,
    /// Group ids used.
    pub groups: Vec<String>,
    /// Worker names used.
    pub workers: Vec<String>,
    /// Task names that may occur (`app.tasks.fan_out` and
    /// `app.tasks.join_results` are added when there are groups).
    pub names: Vec<String>,
}

/// How a generated task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Succeed,
    Fail,
    RevokeEarly,
    Terminate,
    Reject,
}

/// Links of a task inside a workflow.
#[derive(Debug, Clone, Default)]
struct Links {
    root: Option<String>,
    parent: Option<String>,
    group: Option<String>,
    chord: Option<String>,
}

struct Builder<'a> {
    cfg: &'a GenConfig,
    rng: Rng,
    names: Vec<String>,
    workers: Vec<String>,
    client: String,
    /// (timestamp in micros, event); sorted at the end.
    out: Vec<(i64, Event)>,
    task_ids: Vec<(i64, String)>,
    roots: Vec<String>,
    groups: Vec<String>,
    tasks: usize,
}

fn micros(t: Timestamp) -> i64 {
    (t * 1e6).round() as i64
}

fn secs(us: i64) -> Timestamp {
    us as f64 / 1e6
}

impl Builder<'_> {
    fn name(&mut self) -> String {
        // Zipf-like: earlier names are more frequent.
        let n = self.names.len().max(1) as u64;
        let a = self.rng.below(n);
        let b = self.rng.below(n);
        self.names
            .get(a.min(b) as usize)
            .cloned()
            .unwrap_or_else(|| "app.tasks.default".to_owned())
    }

    fn worker(&mut self) -> String {
        self.rng
            .pick(&self.workers)
            .cloned()
            .unwrap_or_else(|| "celery@worker-00.example.com".to_owned())
    }

    fn fate(&mut self) -> (Fate, u64) {
        let c = self.cfg;
        let u = self.rng.unit();
        let retries = if self.rng.chance(c.retry_ratio) {
            1 + self.rng.below(2)
        } else {
            0
        };
        let mut edge = c.fail_ratio;
        if u < edge {
            return (Fate::Fail, retries);
        }
        edge += c.revoke_ratio;
        if u < edge {
            let f = if self.rng.chance(0.5) {
                Fate::RevokeEarly
            } else {
                Fate::Terminate
            };
            return (f, if f == Fate::RevokeEarly { 0 } else { retries });
        }
        edge += c.reject_ratio;
        if u < edge {
            return (Fate::Reject, 0);
        }
        (Fate::Succeed, retries)
    }

    fn push(&mut self, us: i64, event: TaskEvent) {
        self.out.push((us, Event::Task(event)));
    }

    fn ev(&self, kind: TaskEventKind, id: &str, us: i64, host: &str) -> TaskEvent {
        let mut e = TaskEvent::new(kind, id, secs(us)).with_hostname(host);
        e.pid = Some(1000 + (host.len() as i64 % 7));
        e.utcoffset = Some(0.0);
        e
    }

    /// One task from `t0` (micros); returns (finish time, succeeded).
    fn task(
        &mut self,
        id: &str,
        name: &str,
        links: &Links,
        t0: i64,
        fate: (Fate, u64),
    ) -> (i64, bool) {
        self.tasks += 1;
        self.task_ids.push((t0, id.to_owned()));
        let worker = self.worker();
        let args = make_args(&mut self.rng, self.cfg.args_size);
        let kwargs = make_kwargs(&mut self.rng);
        let root = links.root.clone().or_else(|| Some(id.to_owned()));
        let describe = |e: &mut TaskEvent, retries: u64| {
            e.name = Some(name.to_owned());
            e.args = Some(args.clone());
            e.kwargs = Some(kwargs.clone());
            e.root_id.clone_from(&root);
            e.parent_id.clone_from(&links.parent);
            e.group_id.clone_from(&links.group);
            e.chord_id.clone_from(&links.chord);
            e.retries = Some(retries);
        };
        let mut t = t0;
        if self.cfg.sent_events {
            let mut sent = self.ev(TaskEventKind::Sent, id, t, &self.client.clone());
            describe(&mut sent, 0);
            sent.queue = Some("celery".to_owned());
            sent.exchange = Some(String::new());
            sent.routing_key = Some("celery".to_owned());
            self.push(t, sent);
            t += self.rng.range(200, 20_000) as i64;
        }
        let (fate, retries) = fate;
        for attempt in 0..=retries {
            let mut received = self.ev(TaskEventKind::Received, id, t, &worker);
            describe(&mut received, attempt);
            self.push(t, received);
            t += self.rng.range(100, 5_000) as i64;
            if attempt == 0 && fate == Fate::RevokeEarly {
                let mut revoked = self.ev(TaskEventKind::Revoked, id, t, &worker);
                revoked.terminated = Some(false);
                revoked.expired = Some(self.rng.chance(0.5));
                self.push(t, revoked);
                return (t, false);
            }
            if attempt == 0 && fate == Fate::Reject {
                let mut rejected = self.ev(TaskEventKind::Rejected, id, t, &worker);
                rejected.requeue = Some(false);
                self.push(t, rejected);
                return (t, false);
            }
            let started = self.ev(TaskEventKind::Started, id, t, &worker);
            let start = t;
            self.push(t, started);
            t += self.rng.range(2_000, 3_000_000) as i64;
            if attempt < retries {
                let mut retried = self.ev(TaskEventKind::Retried, id, t, &worker);
                retried.exception = Some(RETRY_EXCEPTION.to_owned());
                retried.traceback = Some(make_traceback(&mut self.rng, name));
                self.push(t, retried);
                t += 5_000_000 + self.rng.range(0, 100_000) as i64;
                continue;
            }
            match fate {
                Fate::Succeed => {
                    let mut done = self.ev(TaskEventKind::Succeeded, id, t, &worker);
                    done.result = Some(make_result(&mut self.rng, 180));
                    done.runtime = Some(secs(t - start));
                    self.push(t, done);
                    return (t, true);
                }
                Fate::Fail => {
                    let mut failed = self.ev(TaskEventKind::Failed, id, t, &worker);
                    failed.exception = Some(FAIL_EXCEPTION.to_owned());
                    failed.traceback = Some(make_traceback(&mut self.rng, name));
                    self.push(t, failed);
                    return (t, false);
                }
                _ => {
                    let mut revoked = self.ev(TaskEventKind::Revoked, id, t, &worker);
                    revoked.terminated = Some(true);
                    revoked.signum = Some(15);
                    self.push(t, revoked);
                    return (t, false);
                }
            }
        }
        (t, false)
    }

    fn single(&mut self, t0: i64) {
        let id = self.rng.uuid();
        let name = self.name();
        let fate = self.fate();
        self.task(&id, &name, &Links::default(), t0, fate);
    }

    fn chain(&mut self, t0: i64) {
        let len = self.rng.range(2, 5);
        let root = self.rng.uuid();
        self.roots.push(root.clone());
        let mut parent: Option<String> = None;
        let mut t = t0;
        for i in 0..len {
            let id = if i == 0 {
                root.clone()
            } else {
                self.rng.uuid()
            };
            let name = self.name();
            let links = Links {
                root: Some(root.clone()),
                parent: parent.clone(),
                ..Links::default()
            };
            let fate = if i + 1 == len {
                self.fate()
            } else {
                (Fate::Succeed, 0)
            };
            let (end, ok) = self.task(&id, &name, &links, t, fate);
            if !ok {
                break;
            }
            t = end + self.rng.range(500, 50_000) as i64;
            parent = Some(id);
        }
    }

    fn group(&mut self, t0: i64, chord: bool) {
        let root = self.rng.uuid();
        self.roots.push(root.clone());
        let gid = self.rng.uuid();
        self.groups.push(gid.clone());
        let root_links = Links {
            root: Some(root.clone()),
            ..Links::default()
        };
        let (end, _) = self.task(
            &root,
            "app.tasks.fan_out",
            &root_links,
            t0,
            (Fate::Succeed, 0),
        );
        let callback = chord.then(|| self.rng.uuid());
        let members = self.rng.range(2, 6);
        let name = self.name();
        let mut last = end;
        for _ in 0..members {
            let id = self.rng.uuid();
            let links = Links {
                root: Some(root.clone()),
                parent: Some(root.clone()),
                group: Some(gid.clone()),
                chord: callback.clone(),
            };
            let start = end + self.rng.range(100, 30_000) as i64;
            let fate = if chord {
                (Fate::Succeed, 0)
            } else {
                self.fate()
            };
            let (done, _) = self.task(&id, &name, &links, start, fate);
            last = last.max(done);
        }
        if let Some(cb) = callback {
            let links = Links {
                root: Some(root.clone()),
                parent: Some(root),
                ..Links::default()
            };
            let fate = self.fate();
            self.task(&cb, "app.tasks.join_results", &links, last + 1_000, fate);
        }
    }

    fn workers(&mut self, first: i64, last: i64) {
        let hosts = self.workers.clone();
        for (i, host) in hosts.iter().enumerate() {
            let pid = 4000 + i as i64;
            let freq = if self.cfg.heartbeat_interval > 0.0 {
                self.cfg.heartbeat_interval
            } else {
                2.0
            };
            let base = |kind, us: i64| {
                let mut e = WorkerEvent::new(kind, host.clone(), secs(us));
                e.pid = Some(pid);
                e.freq = Some(freq);
                e.utcoffset = Some(0.0);
                e.sw_ident = Some("py-celery".to_owned());
                e.sw_ver = Some("5.5.3".to_owned());
                e.sw_sys = Some("Linux".to_owned());
                e
            };
            let online_at = first - 1_000_000 - i as i64 * 1_000;
            if self.cfg.worker_events {
                self.out.push((
                    online_at,
                    Event::Worker(base(WorkerEventKind::Online, online_at)),
                ));
            }
            if self.cfg.heartbeat_interval > 0.0 {
                let step = micros(self.cfg.heartbeat_interval).max(1);
                let mut t = online_at + step;
                let mut processed = 0;
                while t <= last {
                    let mut hb = base(WorkerEventKind::Heartbeat, t);
                    processed += self.rng.below(50);
                    hb.processed = Some(processed);
                    hb.active = Some(self.rng.below(4));
                    let load = self.rng.below(400) as f64 / 100.0;
                    hb.loadavg = Some(vec![load, load / 2.0, load / 4.0]);
                    self.out.push((t, Event::Worker(hb)));
                    t += step;
                }
            }
            if self.cfg.worker_events {
                let off = last + 1_000_000 + i as i64 * 1_000;
                self.out
                    .push((off, Event::Worker(base(WorkerEventKind::Offline, off))));
            }
        }
    }
}

/// Generate a stream from `cfg`. Deterministic: the same config gives the
/// same events.
pub fn generate(cfg: &GenConfig) -> Generated {
    let mut rng = Rng::new(cfg.seed);
    let client = format!("gen{}@client-01.example.com", 10_000 + rng.below(50_000));
    let mut b = Builder {
        cfg,
        rng,
        names: task_names(cfg.task_names.max(1)),
        workers: worker_names(cfg.workers.max(1)),
        client,
        out: Vec::new(),
        task_ids: Vec::new(),
        roots: Vec::new(),
        groups: Vec::new(),
        tasks: 0,
    };
    let start = micros(cfg.start);
    let span = micros(cfg.span.max(0.0)).max(1) as u64;
    let want = cfg.tasks.max(1) as u64;
    // Units (single tasks or workflows) start in order over the whole span:
    // the start follows the share of tasks already generated, plus jitter.
    while b.tasks < cfg.tasks {
        let done = b.tasks as u64;
        let t0 = start
            + (u128::from(span) * u128::from(done) / u128::from(want)) as i64
            + b.rng.below(span / want + 1) as i64;
        if b.rng.chance(cfg.workflow_ratio) && cfg.tasks - b.tasks >= 3 {
            match b.rng.below(3) {
                0 => b.chain(t0),
                1 => b.group(t0, false),
                _ => b.group(t0, true),
            }
        } else {
            b.single(t0);
        }
    }
    let first = b.out.iter().map(|(t, _)| *t).min().unwrap_or(start);
    let last = b.out.iter().map(|(t, _)| *t).max().unwrap_or(start);
    b.workers(first, last);
    b.out.sort_by_key(|(t, _)| *t);
    let mut events: Vec<Event> = b.out.into_iter().map(|(_, e)| e).collect();
    for (clock, e) in events.iter_mut().enumerate() {
        match e {
            Event::Task(t) => t.clock = clock as u64 + 1,
            Event::Worker(w) => w.clock = clock as u64 + 1,
            Event::Unknown(_) => {}
        }
    }
    b.task_ids.sort_by_key(|(t, _)| *t);
    if !b.groups.is_empty() {
        b.names.push("app.tasks.fan_out".to_owned());
        b.names.push("app.tasks.join_results".to_owned());
    }
    Generated {
        events,
        task_ids: b.task_ids.into_iter().map(|(_, id)| id).collect(),
        roots: b.roots,
        groups: b.groups,
        workers: b.workers,
        names: b.names,
    }
}

/// Move events out of order: each event moves up to `window` places, so
/// late and early events are realistic rather than fully random.
pub fn jitter(events: &mut [Event], window: usize, rng: &mut Rng) {
    if window == 0 {
        return;
    }
    for i in 0..events.len() {
        let j = (i + rng.below(window as u64 + 1) as usize).min(events.len() - 1);
        events.swap(i, j);
    }
}

/// An event of a type celery-cnc does not model (stores skip it).
pub fn unknown_event(kind: &str, timestamp: Timestamp) -> Event {
    let mut body = Map::new();
    body.insert("type".to_owned(), Value::String(kind.to_owned()));
    body.insert("timestamp".to_owned(), Value::from(timestamp));
    Event::Unknown(UnknownEvent {
        kind: kind.to_owned(),
        body: Value::Object(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_ordered() {
        let cfg = GenConfig::default();
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a, b);
        assert!(a.task_ids.len() >= cfg.tasks);
        assert!(
            a.events
                .windows(2)
                .all(|w| w[0].timestamp() <= w[1].timestamp())
        );
        let c = generate(&GenConfig { seed: 2, ..cfg });
        assert_ne!(a.events, c.events);
    }

    #[test]
    fn streams_have_every_kind_of_event() {
        let g = generate(&GenConfig {
            tasks: 500,
            ..GenConfig::default()
        });
        for kind in [
            "task-sent",
            "task-received",
            "task-started",
            "task-succeeded",
            "task-failed",
            "task-retried",
            "task-revoked",
            "task-rejected",
            "worker-online",
            "worker-heartbeat",
            "worker-offline",
        ] {
            assert!(g.events.iter().any(|e| e.kind_str() == kind), "{kind}");
        }
        assert!(!g.roots.is_empty() && !g.groups.is_empty());
        let any_chord = g
            .events
            .iter()
            .any(|e| matches!(e, Event::Task(t) if t.chord_id.is_some()));
        assert!(any_chord);
    }

    #[test]
    fn uuids_look_like_v4() {
        let mut rng = Rng::new(7);
        let id = rng.uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, rng.uuid());
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::new(3);
        assert_eq!(rng.below(0), 0);
        for _ in 0..1000 {
            assert!(rng.below(7) < 7);
        }
    }
}
