//! One-shot commands on a broker: `inspect`, `control`, `revoke`, `send`,
//! `queues`, `purge`, `result` and `events`.
//!
//! Each connects, does one thing and prints a table, or JSON with `--json`.
//! Replies are sorted by worker name so output is stable.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use cnc_broker::protocol::control::{Outcome, RegisteredTask, outcome};
use cnc_broker::protocol::task::{Expires, SendTask, parse_iso};
use cnc_broker::{
    Broker, ControlClient, ErrorKind, EventStreamOptions, PurgeFilter, Target, WorkerReply,
};
use serde_json::{Map, Value, json};

use crate::exit::{
    CmdResult, Failure, broker_failure, connect_broker, op_failure, parse_duration, seconds,
};
use crate::table::Table;

/// Where the broker is, and how to print.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker URL.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "CELERY_CNC_BROKER",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub broker: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up connecting to the broker after this long.
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

impl BrokerArgs {
    async fn connect(&self) -> CmdResult<Arc<dyn Broker>> {
        connect_broker(&self.broker, self.connect_timeout).await
    }
}

/// Which workers a command is for, and how long to wait for replies.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Only these workers (comma-separated or repeated); a name with `*`
    /// or `?` is a glob (`w1@*`).
    #[arg(
        long,
        short = 'd',
        global = true,
        value_name = "NODE",
        value_delimiter = ','
    )]
    pub destination: Vec<String>,
    /// How long to wait for replies (`1`, `2.5`, `500ms`).
    #[arg(long, short = 't', global = true, value_name = "DURATION", default_value = "1", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl TargetArgs {
    fn target(&self) -> CmdResult<Target> {
        let (globs, nodes): (Vec<&String>, Vec<&String>) = self
            .destination
            .iter()
            .filter(|d| !d.trim().is_empty())
            .partition(|d| d.contains(['*', '?', '[']));
        match (globs.as_slice(), nodes.is_empty()) {
            ([], true) => Ok(Target::All),
            ([], false) => Ok(Target::Nodes(nodes.into_iter().cloned().collect())),
            ([glob], true) => Ok(Target::Glob((*glob).clone())),
            _ => Err(Failure::usage(
                "--destination takes either node names or one glob pattern",
            )),
        }
    }
}

/// `celery-cnc inspect <verb>`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    verb: InspectVerb,
}

/// What to ask the workers.
#[derive(Debug, Clone, Subcommand)]
pub enum InspectVerb {
    /// Are they alive.
    Ping,
    /// Pool, broker connection, task totals, resource usage.
    Stats,
    /// Tasks running now.
    Active,
    /// Tasks prefetched, waiting for a pool slot.
    Reserved,
    /// Tasks waiting for their ETA or countdown.
    Scheduled,
    /// Registered task names, with these attributes (`rate_limit`, `queue`,
    /// `time_limit`…).
    Registered {
        /// Task attributes to show.
        attrs: Vec<String>,
    },
    /// The queues each worker consumes.
    #[command(name = "active_queues", alias = "active-queues")]
    ActiveQueues,
    /// Settings changed from Celery's defaults.
    Conf {
        /// All settings, defaults included.
        #[arg(long)]
        with_defaults: bool,
    },
    /// Ids in the workers' revoked sets.
    Revoked,
    /// Where these task ids are (active, reserved, scheduled).
    #[command(name = "query_task", alias = "query-task")]
    QueryTask {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// The workers' text report.
    Report,
    /// The workers' Lamport clocks.
    Clock,
}

impl InspectVerb {
    fn name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Stats => "stats",
            Self::Active => "active",
            Self::Reserved => "reserved",
            Self::Scheduled => "scheduled",
            Self::Registered { .. } => "registered",
            Self::ActiveQueues => "active_queues",
            Self::Conf { .. } => "conf",
            Self::Revoked => "revoked",
            Self::QueryTask { .. } => "query_task",
            Self::Report => "report",
            Self::Clock => "clock",
        }
    }
}

/// `celery-cnc inspect`.
pub async fn inspect(args: InspectArgs) -> CmdResult {
    let target = args.target.target()?;
    let broker = args.broker.connect().await?;
    let ctl = ControlClient::new(broker).with_timeout(args.target.timeout);
    let verb = args.verb.name();
    let replies = match &args.verb {
        InspectVerb::Ping => ctl.ping(&target).await,
        InspectVerb::Stats => ctl.stats(&target).await,
        InspectVerb::Active => ctl.active(&target).await,
        InspectVerb::Reserved => ctl.reserved(&target).await,
        InspectVerb::Scheduled => ctl.scheduled(&target).await,
        InspectVerb::Registered { attrs } => {
            let a: Vec<&str> = attrs.iter().map(String::as_str).collect();
            ctl.registered(&target, &a).await
        }
        InspectVerb::ActiveQueues => ctl.active_queues(&target).await,
        InspectVerb::Conf { with_defaults } => ctl.conf(&target, *with_defaults).await,
        InspectVerb::Revoked => ctl.revoked(&target).await,
        InspectVerb::QueryTask { ids } => ctl.query_task(&target, ids).await,
        InspectVerb::Report => ctl.report(&target).await,
        InspectVerb::Clock => ctl.clock(&target).await,
    }
    .map_err(|e| op_failure(&format!("inspect {verb}"), &e))?;
    print_replies(verb, replies, &target, &args.target, args.broker.json)
}

/// `celery-cnc control <verb>`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    verb: ControlVerb,
}

/// What to tell the workers.
#[derive(Debug, Clone, Subcommand)]
pub enum ControlVerb {
    /// Add N pool processes.
    #[command(alias = "pool_grow")]
    PoolGrow {
        /// How many.
        #[arg(default_value_t = 1)]
        n: u32,
    },
    /// Remove N pool processes.
    #[command(alias = "pool_shrink")]
    PoolShrink {
        /// How many.
        #[arg(default_value_t = 1)]
        n: u32,
    },
    /// Set the autoscaler's bounds (workers started with `--autoscale`).
    Autoscale {
        /// Most processes.
        max: u32,
        /// Fewest processes.
        min: u32,
    },
    /// Start consuming a queue.
    #[command(alias = "add_consumer")]
    AddConsumer {
        /// Queue name.
        queue: String,
    },
    /// Stop consuming a queue.
    #[command(alias = "cancel_consumer")]
    CancelConsumer {
        /// Queue name.
        queue: String,
    },
    /// Set a task's rate limit (`10/m`, `5/s`, `1/h`; `0` removes it).
    #[command(alias = "rate_limit")]
    RateLimit {
        /// Task name.
        task: String,
        /// The limit.
        rate: String,
    },
    /// Set a task's soft and hard time limits, in seconds.
    #[command(alias = "time_limit")]
    TimeLimit {
        /// Task name.
        task: String,
        /// Soft limit (raises `SoftTimeLimitExceeded` in the task).
        soft: f64,
        /// Hard limit (kills the process).
        hard: f64,
    },
    /// Shut the workers down (warm: running tasks finish). No reply.
    /// Without `--destination` it needs `--yes`.
    Shutdown {
        /// Really shut down every worker.
        #[arg(long)]
        yes: bool,
    },
    /// Restart the pool processes (workers need `worker_pool_restarts`).
    #[command(alias = "pool_restart")]
    PoolRestart {
        /// Also reload these modules.
        #[arg(long = "module", value_name = "MODULE")]
        modules: Vec<String>,
        /// Reload modules already imported.
        #[arg(long)]
        reload: bool,
    },
    /// Turn task events on.
    #[command(alias = "enable_events")]
    EnableEvents,
    /// Turn task events off.
    #[command(alias = "disable_events")]
    DisableEvents,
}

/// `celery-cnc control`.
pub async fn control(args: ControlArgs) -> CmdResult {
    let target = args.target.target()?;
    // Usage errors before connecting.
    match &args.verb {
        ControlVerb::Shutdown { yes: false } if target == Target::All => {
            return Err(Failure::usage(
                "refusing to shut down every worker without --yes (or name them with --destination)",
            ));
        }
        ControlVerb::Autoscale { max, min } if min > max => {
            return Err(Failure::usage("autoscale: MIN is larger than MAX"));
        }
        _ => {}
    }
    let broker = args.broker.connect().await?;
    let ctl = ControlClient::new(broker).with_timeout(args.target.timeout);
    let (verb, replies) = match &args.verb {
        ControlVerb::PoolGrow { n } => ("pool_grow", ctl.pool_grow(&target, *n).await),
        ControlVerb::PoolShrink { n } => ("pool_shrink", ctl.pool_shrink(&target, *n).await),
        ControlVerb::Autoscale { max, min } => {
            ("autoscale", ctl.autoscale(&target, *max, *min).await)
        }
        ControlVerb::AddConsumer { queue } => {
            ("add_consumer", ctl.add_consumer(&target, queue).await)
        }
        ControlVerb::CancelConsumer { queue } => {
            ("cancel_consumer", ctl.cancel_consumer(&target, queue).await)
        }
        ControlVerb::RateLimit { task, rate } => {
            ("rate_limit", ctl.rate_limit(&target, task, rate).await)
        }
        ControlVerb::TimeLimit { task, soft, hard } => (
            "time_limit",
            ctl.time_limit(&target, task, Some(*hard), Some(*soft))
                .await,
        ),
        ControlVerb::Shutdown { .. } => {
            ctl.shutdown(&target)
                .await
                .map_err(|e| op_failure("control shutdown", &e))?;
            if args.broker.json {
                out(&json!({"sent": "shutdown"}).to_string())?;
            } else {
                out("shutdown sent (workers do not reply; they go offline)")?;
            }
            return Ok(());
        }
        ControlVerb::PoolRestart { modules, reload } => {
            let modules = (!modules.is_empty()).then(|| modules.clone());
            (
                "pool_restart",
                ctl.pool_restart(&target, modules, *reload).await,
            )
        }
        ControlVerb::EnableEvents => ("enable_events", ctl.enable_events(&target).await),
        ControlVerb::DisableEvents => ("disable_events", ctl.disable_events(&target).await),
    };
    let replies = replies.map_err(|e| op_failure(&format!("control {verb}"), &e))?;
    print_replies(verb, replies, &target, &args.target, args.broker.json)
}

/// `celery-cnc revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// Task ids.
    #[arg(required = true)]
    ids: Vec<String>,
    /// Also kill the process running the task.
    #[arg(long)]
    terminate: bool,
    /// The signal for `--terminate` (`SIGTERM`, `SIGKILL`, `SIGUSR1`…).
    #[arg(long, value_name = "SIG", requires = "terminate")]
    signal: Option<String>,
}

/// `celery-cnc revoke`.
pub async fn revoke(args: RevokeArgs) -> CmdResult {
    let target = args.target.target()?;
    let signal = args.signal.as_deref().map(normalize_signal).transpose()?;
    let broker = args.broker.connect().await?;
    let ctl = ControlClient::new(broker).with_timeout(args.target.timeout);
    let replies = ctl
        .revoke(&target, &args.ids, args.terminate, signal.as_deref())
        .await
        .map_err(|e| op_failure("revoke", &e))?;
    print_replies("revoke", replies, &target, &args.target, args.broker.json)
}

fn normalize_signal(s: &str) -> CmdResult<String> {
    let up = s.trim().to_ascii_uppercase();
    if up.is_empty() || !up.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Failure::usage(format!("`{s}` is not a signal name")));
    }
    if up.chars().all(|c| c.is_ascii_digit()) || up.starts_with("SIG") {
        Ok(up)
    } else {
        Ok(format!("SIG{up}"))
    }
}

fn hosts_of(target: &Target) -> Option<&[String]> {
    match target {
        Target::Nodes(n) => Some(n),
        _ => None,
    }
}

/// Print replies as a table or JSON; exit 3 when nobody (or not every
/// named node) answered, 1 when a worker answered with an error.
fn print_replies(
    verb: &str,
    mut replies: Vec<WorkerReply>,
    target: &Target,
    t: &TargetArgs,
    json: bool,
) -> CmdResult {
    replies.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    if json {
        let map: Map<String, Value> = replies
            .iter()
            .map(|r| (r.hostname.clone(), r.payload.clone()))
            .collect();
        out(&Value::Object(map).to_string())?;
    } else if !replies.is_empty() {
        out(reply_table(verb, &replies).render().trim_end())?;
    }
    if replies.is_empty() {
        return Err(Failure::nothing(format!(
            "no worker replied within {}",
            seconds(t.timeout)
        )));
    }
    if let Some(nodes) = hosts_of(target) {
        let got: BTreeSet<&str> = replies.iter().map(|r| r.hostname.as_str()).collect();
        let missing: Vec<&str> = nodes
            .iter()
            .map(String::as_str)
            .filter(|n| !got.contains(n))
            .collect();
        if !missing.is_empty() {
            return Err(Failure::nothing(format!(
                "no reply from {} within {}",
                missing.join(", "),
                seconds(t.timeout)
            )));
        }
    }
    let errors = replies
        .iter()
        .filter(|r| matches!(outcome(&r.payload), Outcome::Error(_)))
        .count();
    if errors > 0 {
        return Err(Failure::runtime(format!(
            "{errors} of {} workers answered {verb} with an error",
            replies.len()
        )));
    }
    Ok(())
}

/// Compact JSON, or the string itself.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn field(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).map(text).unwrap_or_default()
}

/// The table for one verb's replies.
pub fn reply_table(verb: &str, replies: &[WorkerReply]) -> Table {
    let mut errors = Table::new(&["worker", "error"]);
    let mut table = match verb {
        "ping" | "report" | "clock" => Table::new(&["worker", "reply"]),
        "stats" => Table::new(&[
            "worker", "pid", "uptime", "pool", "prefetch", "done", "broker",
        ]),
        "active" | "reserved" => Table::new(&["worker", "id", "name", "args", "started"]),
        "scheduled" => Table::new(&["worker", "eta", "priority", "id", "name"]),
        "registered" => Table::new(&["worker", "task", "attributes"]),
        "active_queues" => Table::new(&["worker", "queue", "exchange", "routing key"]),
        "conf" => Table::new(&["worker", "setting", "value"]),
        "revoked" => Table::new(&["worker", "id"]),
        "query_task" => Table::new(&["worker", "id", "state", "name"]),
        _ => Table::new(&["worker", "result"]),
    };
    for r in replies {
        let w = r.hostname.as_str();
        if let Outcome::Error(e) = outcome(&r.payload) {
            errors.row([w, e]);
            continue;
        }
        let items = || r.payload.as_array().cloned().unwrap_or_default();
        match verb {
            "ping" => table.row([w.to_owned(), field(&r.payload, "/ok")]),
            "report" => table.row([w.to_owned(), field(&r.payload, "/ok")]),
            "clock" => table.row([w.to_owned(), field(&r.payload, "/clock")]),
            "stats" => {
                let p = &r.payload;
                let pool = p
                    .pointer("/pool/processes")
                    .and_then(Value::as_array)
                    .map(|a| a.len().to_string())
                    .unwrap_or_else(|| field(p, "/pool/max-concurrency"));
                let done: u64 = p
                    .get("total")
                    .and_then(Value::as_object)
                    .map(|m| m.values().filter_map(Value::as_u64).sum())
                    .unwrap_or(0);
                table.row([
                    w.to_owned(),
                    field(p, "/pid"),
                    field(p, "/uptime").to_string() + "s",
                    pool,
                    field(p, "/prefetch_count"),
                    done.to_string(),
                    field(p, "/broker/transport"),
                ]);
            }
            "active" | "reserved" => {
                for t in items() {
                    let started = t
                        .get("time_start")
                        .and_then(Value::as_f64)
                        .map(format_ts)
                        .unwrap_or_default();
                    table.row([
                        w.to_owned(),
                        field(&t, "/id"),
                        field(&t, "/name"),
                        field(&t, "/args"),
                        started,
                    ]);
                }
            }
            "scheduled" => {
                for t in items() {
                    table.row([
                        w.to_owned(),
                        field(&t, "/eta"),
                        field(&t, "/priority"),
                        field(&t, "/request/id"),
                        field(&t, "/request/name"),
                    ]);
                }
            }
            "registered" => {
                for t in items() {
                    let entry = RegisteredTask::parse(t.as_str().unwrap_or_default());
                    let attrs: Vec<String> = entry
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    table.row([w.to_owned(), entry.name, attrs.join(" ")]);
                }
            }
            "active_queues" => {
                for q in items() {
                    table.row([
                        w.to_owned(),
                        field(&q, "/name"),
                        field(&q, "/exchange/name"),
                        field(&q, "/routing_key"),
                    ]);
                }
            }
            "conf" => {
                if let Some(m) = r.payload.as_object() {
                    for (k, v) in m {
                        table.row([w.to_owned(), k.clone(), text(v)]);
                    }
                }
            }
            "revoked" => {
                for id in items() {
                    table.row([w.to_owned(), text(&id)]);
                }
            }
            "query_task" => {
                if let Some(m) = r.payload.as_object() {
                    for (id, v) in m {
                        table.row([
                            w.to_owned(),
                            id.clone(),
                            field(v, "/0"),
                            field(v, "/1/name"),
                        ]);
                    }
                }
            }
            _ => {
                let shown = match outcome(&r.payload) {
                    Outcome::Ok(v) => text(v),
                    Outcome::Error(e) => e.to_owned(),
                    Outcome::Other(v) => text(v),
                };
                table.row([w.to_owned(), shown]);
            }
        }
    }
    if !errors.is_empty() {
        if table.is_empty() {
            return errors;
        }
        for line in errors.render().lines().skip(1) {
            table.row([line.to_owned()]);
        }
    }
    table
}

fn format_ts(ts: f64) -> String {
    chrono::DateTime::from_timestamp_millis((ts * 1000.0) as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Write one line to stdout. A closed pipe (`| head`) ends the command
/// quietly.
pub fn out(line: &str) -> CmdResult {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// `celery-cnc send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Task name (`proj.tasks.add`).
    task: String,
    /// Positional arguments, a JSON array (`'[2, 3]'`).
    #[arg(long, value_name = "JSON", default_value = "[]")]
    args: String,
    /// Keyword arguments, a JSON object (`'{"x": 1}'`).
    #[arg(long, value_name = "JSON", default_value = "{}")]
    kwargs: String,
    /// Queue to send to.
    #[arg(long, default_value = "celery")]
    queue: String,
    /// Run no earlier than this long from now (`10`, `30s`, `5m`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "eta")]
    countdown: Option<Duration>,
    /// Run no earlier than this time (ISO 8601, `2030-01-01T12:00:00Z`).
    #[arg(long, value_name = "TIME")]
    eta: Option<String>,
    /// Discard the task if not started by then: a duration (`60`, `5m`) or
    /// an ISO 8601 time.
    #[arg(long, value_name = "DURATION|TIME")]
    expires: Option<String>,
    /// Message priority, 0-255 (Redis groups 0-9 into 4 buckets).
    #[arg(long)]
    priority: Option<u8>,
    /// Use this task id instead of a new uuid.
    #[arg(long)]
    id: Option<String>,
}

/// `celery-cnc send`: prints the task id.
pub async fn send(args: SendArgs) -> CmdResult {
    let positional: Vec<Value> = match serde_json::from_str(&args.args) {
        Ok(Value::Array(a)) => a,
        Ok(_) | Err(_) => {
            return Err(Failure::usage(format!(
                "--args must be a JSON array, like '[2, 3]' (got {})",
                args.args
            )));
        }
    };
    let kwargs: Map<String, Value> = match serde_json::from_str(&args.kwargs) {
        Ok(Value::Object(m)) => m,
        Ok(_) | Err(_) => {
            return Err(Failure::usage(format!(
                "--kwargs must be a JSON object, like '{{\"x\": 1}}' (got {})",
                args.kwargs
            )));
        }
    };
    let mut task = SendTask::new(&args.task)
        .args(positional)
        .kwargs(kwargs)
        .queue(&args.queue);
    if let Some(c) = args.countdown {
        task = task.countdown(c.as_secs_f64());
    }
    if let Some(eta) = &args.eta {
        let at = parse_iso(eta).ok_or_else(|| {
            Failure::usage(format!(
                "--eta `{eta}` is not an ISO 8601 time (2030-01-01T12:00:00Z)"
            ))
        })?;
        task = task.eta(at);
    }
    if let Some(e) = &args.expires {
        let exp = match parse_duration(e) {
            Ok(d) => Expires::In(d.as_secs_f64()),
            Err(_) => Expires::At(parse_iso(e).ok_or_else(|| {
                Failure::usage(format!(
                    "--expires `{e}` is neither a duration (60, 5m) nor an ISO 8601 time"
                ))
            })?),
        };
        task = task.expires(exp);
    }
    if let Some(p) = args.priority {
        task = task.priority(p);
    }
    if let Some(id) = &args.id {
        task = task.id(id);
    }
    let msg = task.build();
    let broker = args.broker.connect().await?;
    broker
        .send_task(&msg.queue, msg.to_message())
        .await
        .map_err(|e| op_failure(&format!("sending {}", args.task), &e))?;
    if args.broker.json {
        out(&json!({"id": msg.id, "task": msg.task, "queue": msg.queue}).to_string())
    } else {
        out(&msg.id)
    }
}

/// `celery-cnc queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// How long to wait for the workers' `active_queues` replies.
    #[arg(long, short = 't', value_name = "DURATION", default_value = "1", value_parser = parse_duration)]
    timeout: Duration,
    /// Also show these queues (RabbitMQ cannot list queues; on Redis a
    /// queue nobody declared is not discovered).
    queues: Vec<String>,
}

/// `celery-cnc queues`: depth and consumers of every queue found.
pub async fn queues(args: QueuesArgs) -> CmdResult {
    let broker = args.broker.connect().await?;
    let mut names: BTreeSet<String> = broker
        .discover_queues()
        .await
        .map_err(|e| op_failure("listing queues", &e))?
        .into_iter()
        .collect();
    names.extend(args.queues.iter().cloned());
    let ctl = ControlClient::new(broker.clone()).with_timeout(args.timeout);
    let mut workers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let replies = ctl
        .active_queues(&Target::All)
        .await
        .map_err(|e| op_failure("asking workers for their queues", &e))?;
    for r in replies {
        for q in r.payload.as_array().cloned().unwrap_or_default() {
            if let Some(n) = q.get("name").and_then(Value::as_str) {
                names.insert(n.to_owned());
                workers
                    .entry(n.to_owned())
                    .or_default()
                    .push(r.hostname.clone());
            }
        }
    }
    // celery-cnc's own reply queues are not task queues.
    names.retain(|n| !n.ends_with(".reply.celery.pidbox") && !n.ends_with("celeryev"));
    if names.is_empty() {
        return Err(Failure::nothing(
            "no queues found (name them: celery-cnc queues QUEUE...)",
        ));
    }
    let mut rows = Vec::new();
    for name in names {
        let mut ws = workers.remove(&name).unwrap_or_default();
        ws.sort();
        match broker.queue_depth(&name).await {
            Ok(d) => rows.push((name, Some(d), ws)),
            Err(e) if e.kind() == ErrorKind::NotFound => rows.push((name, None, ws)),
            Err(e) => return Err(op_failure(&format!("depth of queue {name}"), &e)),
        }
    }
    if args.broker.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(name, d, ws)| {
                json!({
                    "queue": name,
                    "exists": d.is_some(),
                    "messages": d.as_ref().map_or(0, |d| d.messages),
                    "by_priority": d.as_ref().and_then(|d| d.by_priority),
                    "consumers": d.as_ref().and_then(|d| d.consumers).unwrap_or(ws.len() as u64),
                    "workers": ws,
                })
            })
            .collect();
        return out(&Value::Array(list).to_string());
    }
    let mut table = Table::new(&[
        "queue",
        "messages",
        "consumers",
        "workers",
        "by priority 0/3/6/9",
    ]);
    for (name, d, ws) in rows {
        let Some(d) = d else {
            table.row([name, "(no such queue)".into()]);
            continue;
        };
        table.row([
            name,
            d.messages.to_string(),
            d.consumers.unwrap_or(ws.len() as u64).to_string(),
            ws.join(","),
            d.by_priority
                .map(|b| format!("{}/{}/{}/{}", b[0], b[1], b[2], b[3]))
                .unwrap_or_default(),
        ]);
    }
    out(table.render().trim_end())
}

/// `celery-cnc purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The queue.
    queue: String,
    /// Only messages of this task name.
    #[arg(long, value_name = "NAME", conflicts_with = "group")]
    task: Option<String>,
    /// Only messages of this group id.
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// Really delete (required: purged messages are gone).
    #[arg(long)]
    yes: bool,
}

/// `celery-cnc purge`: remove ready messages.
pub async fn purge(args: PurgeArgs) -> CmdResult {
    let filter = match (&args.task, &args.group) {
        (Some(t), _) => PurgeFilter::TaskName(t.clone()),
        (None, Some(g)) => PurgeFilter::GroupId(g.clone()),
        (None, None) => PurgeFilter::All,
    };
    let what = match &filter {
        PurgeFilter::All => "every ready message".to_owned(),
        PurgeFilter::TaskName(t) => format!("the ready messages of task {t}"),
        PurgeFilter::GroupId(g) => format!("the ready messages of group {g}"),
    };
    if !args.yes {
        return Err(Failure::usage(format!(
            "refusing to delete {what} from queue {} without --yes",
            args.queue
        )));
    }
    let broker = args.broker.connect().await?;
    let n = broker
        .purge(&args.queue, &filter)
        .await
        .map_err(|e| op_failure(&format!("purging queue {}", args.queue), &e))?;
    if args.broker.json {
        out(&json!({"queue": args.queue, "purged": n}).to_string())
    } else {
        out(&format!(
            "purged {n} message{} from queue {}",
            if n == 1 { "" } else { "s" },
            args.queue
        ))
    }
}

/// `celery-cnc result`.
#[derive(Debug, Args)]
pub struct ResultArgs {
    /// Task id.
    id: String,
    /// Result backend URL (`redis://…`).
    #[arg(
        long,
        value_name = "URL",
        env = "CELERY_CNC_BACKEND",
        hide_env_values = true
    )]
    backend: String,
    /// Wait up to this long for a final state (`30s`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    wait: Option<Duration>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `celery-cnc result`: the stored result of one task; exit 3 when there
/// is none (pending or unknown).
pub async fn result(args: ResultArgs) -> CmdResult {
    let shown = cnc_broker::url::redact(&args.backend);
    let what = format!("result backend {shown}");
    let backend = tokio::time::timeout(Duration::from_secs(10), async {
        let b = cnc_broker::connect_backend(&args.backend).await?;
        b.healthcheck().await?;
        Ok::<_, cnc_broker::BrokerError>(b)
    })
    .await
    .map_err(|_| Failure::runtime(format!("cannot reach {what}: no answer within 10s")))?
    .map_err(|e| broker_failure(&what, &e))?;
    let deadline = Instant::now() + args.wait.unwrap_or_default();
    let found = loop {
        let r = backend
            .get(&args.id)
            .await
            .map_err(|e| op_failure(&format!("reading {what}"), &e))?;
        let settled = r
            .as_ref()
            .is_some_and(|r| matches!(r.status.as_str(), "SUCCESS" | "FAILURE" | "REVOKED"));
        if settled || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let Some(r) = found else {
        return Err(Failure::nothing(format!(
            "no result for {} in {shown} (pending or unknown)",
            args.id
        )));
    };
    if args.json {
        return out(&json!({
            "task_id": r.task_id,
            "status": r.status,
            "result": r.result,
            "traceback": r.traceback,
            "date_done": r.date_done,
            "name": r.name,
        })
        .to_string());
    }
    let mut table = Table::new(&["field", "value"]);
    table.row(["id".to_owned(), r.task_id.clone()]);
    table.row(["status".to_owned(), r.status.clone()]);
    if let Some(n) = &r.name {
        table.row(["name".to_owned(), n.clone()]);
    }
    table.row(["result".to_owned(), text(&r.result)]);
    if let Some(d) = &r.date_done {
        table.row(["date done".to_owned(), d.clone()]);
    }
    out(table.render().trim_end())?;
    if let Some(tb) = &r.traceback {
        out(&format!("\n{}", tb.trim_end()))?;
    }
    Ok(())
}

/// `celery-cnc events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this long (`30s`, `5m`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Only events whose type starts with this (`task-`, `worker-heartbeat`).
    #[arg(long = "type", value_name = "PREFIX")]
    kind: Option<String>,
    /// Do not broadcast `enable_events` (workers started without `-E` then
    /// send no task events).
    #[arg(long)]
    no_enable_events: bool,
}

/// `celery-cnc events`: decoded events as JSON lines until Ctrl-C,
/// `--count` or `--timeout`; exit 3 when `--count` was not reached in time.
pub async fn events(args: EventsArgs) -> CmdResult {
    let broker = args.broker.connect().await?;
    let opts = EventStreamOptions {
        enable_events_every: if args.no_enable_events {
            None
        } else {
            Some(Duration::from_secs(60))
        },
        ..EventStreamOptions::default()
    };
    let stats = opts.stats.clone();
    let mut stream = broker
        .events(opts)
        .await
        .map_err(|e| op_failure("subscribing to events", &e))?;
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if args.count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = sleep => {
                return match args.count {
                    Some(c) if seen < c => Err(Failure::nothing(format!(
                        "{seen} of {c} events within {}",
                        seconds(args.timeout.unwrap_or_default())
                    ))),
                    _ => Ok(()),
                };
            }
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    if args.kind.as_deref().is_some_and(|k| !event.kind_str().starts_with(k)) {
                        continue;
                    }
                    out(&serde_json::to_string(&event)?)?;
                    seen += 1;
                }
                Some(Err(e)) => return Err(op_failure("event stream lost", &e)),
                None => {
                    let c = stats.snapshot();
                    return Err(Failure::runtime(format!(
                        "event stream ended after {} messages", c.received
                    )));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(h: &str, payload: Value) -> WorkerReply {
        WorkerReply {
            hostname: h.into(),
            payload,
        }
    }

    #[test]
    fn tables_per_verb() {
        let t = reply_table(
            "registered",
            &[reply(
                "w1@h",
                json!(["cnc.add", "cnc.limited [rate_limit=10/m]"]),
            )],
        );
        let text = t.render();
        assert!(text.contains("cnc.limited  rate_limit=10/m"), "{text}");
        let t = reply_table(
            "pool_grow",
            &[
                reply("w1@h", json!({"ok": "pool will grow"})),
                reply("w2@h", json!({"error": "nope"})),
            ],
        );
        let text = t.render();
        assert!(
            text.contains("pool will grow") && text.contains("nope"),
            "{text}"
        );
        let t = reply_table(
            "query_task",
            &[reply(
                "w1@h",
                json!({"abc": ["active", {"name": "cnc.sleep"}]}),
            )],
        );
        assert!(t.render().contains("abc  active  cnc.sleep"));
    }

    #[test]
    fn targets_and_signals() {
        let t = |d: &[&str]| {
            TargetArgs {
                destination: d.iter().map(|s| s.to_string()).collect(),
                timeout: Duration::from_secs(1),
            }
            .target()
        };
        assert_eq!(t(&[]).ok(), Some(Target::All));
        assert_eq!(t(&["w1@*"]).ok(), Some(Target::Glob("w1@*".into())));
        assert_eq!(
            t(&["a@h", "b@h"]).ok(),
            Some(Target::Nodes(vec!["a@h".into(), "b@h".into()]))
        );
        assert!(t(&["a@*", "b@h"]).is_err());
        assert_eq!(normalize_signal("kill").ok().as_deref(), Some("SIGKILL"));
        assert_eq!(normalize_signal("SIGTERM").ok().as_deref(), Some("SIGTERM"));
        assert!(normalize_signal("rm -rf").is_err());
    }
}
