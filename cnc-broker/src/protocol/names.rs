//! Names of keys, channels, exchanges and queues, as pure functions
//! (README sections 0, 1c, 4b, 5a, 6).

use super::message::AmqpField;

/// Kombu's separator inside `_kombu.binding.*` members and priority list
/// names: the two bytes 0x06 0x16.
pub const SEP: &str = "\x06\x16";

/// Default task queue (`task_default_queue`).
pub const DEFAULT_QUEUE: &str = "celery";
/// Default event exchange (`event_exchange`).
pub const EVENT_EXCHANGE: &str = "celeryev";
/// Default control exchange base name (`control_exchange`).
pub const DEFAULT_CONTROL_EXCHANGE: &str = "celery";
/// The four priority steps kombu's Redis transport uses.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// The pidbox (control request) exchange for a `control_exchange` setting:
/// `celery` -> `celery.pidbox`.
pub fn pidbox_exchange(control_exchange: &str) -> String {
    format!("{control_exchange}.pidbox")
}

/// The reply exchange: `celery` -> `reply.celery.pidbox`.
pub fn reply_exchange(control_exchange: &str) -> String {
    format!("reply.{control_exchange}.pidbox")
}

/// The reply queue / Redis list of one caller: `<oid>.reply.celery.pidbox`.
pub fn reply_queue(oid: &str, control_exchange: &str) -> String {
    format!("{oid}.{}", reply_exchange(control_exchange))
}

/// The Redis priority bucket (a step of [`PRIORITY_STEPS`]) for a priority:
/// the highest step <= `priority`, so 0-2 -> 0, 3-5 -> 3, 6-8 -> 6, 9+ -> 9.
pub fn priority_bucket(priority: u8) -> u8 {
    PRIORITY_STEPS
        .iter()
        .copied()
        .rev()
        .find(|&s| s <= priority)
        .unwrap_or(0)
}

/// The Redis list of `queue` for one bucket (`Q` for 0, `Q\x06\x16<step>`
/// otherwise). Does not apply a key prefix; see [`RedisNames`].
pub fn priority_list_name(queue: &str, bucket: u8) -> String {
    if bucket == 0 {
        queue.to_owned()
    } else {
        format!("{queue}{SEP}{bucket}")
    }
}

/// All four lists of `queue`, in the order workers BRPOP them (lowest
/// priority number first): `Q`, `Q\x06\x163`, `Q\x06\x166`, `Q\x06\x169`.
pub fn priority_list_names(queue: &str) -> [String; 4] {
    PRIORITY_STEPS.map(|s| priority_list_name(queue, s))
}

/// Split a priority list name back into queue and bucket (`Q\x06\x163` ->
/// (`Q`, 3)); a name without a valid suffix is bucket 0.
pub fn parse_priority_list_name(name: &str) -> (&str, u8) {
    if let Some((queue, suffix)) = name.rsplit_once(SEP)
        && let Ok(step) = suffix.parse::<u8>()
        && PRIORITY_STEPS.contains(&step)
        && step != 0
    {
        return (queue, step);
    }
    (name, 0)
}

/// One member of a `_kombu.binding.<exchange>` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingMember {
    /// Routing key the binding matches.
    pub routing_key: String,
    /// Pattern (always empty in practice).
    pub pattern: String,
    /// The queue (Redis list) the message goes to.
    pub queue: String,
}

impl BindingMember {
    /// Parse `routing_key\x06\x16pattern\x06\x16queue`; `None` if it does not
    /// have three parts.
    pub fn parse(member: &str) -> Option<Self> {
        let mut parts = member.splitn(3, SEP);
        let routing_key = parts.next()?.to_owned();
        let pattern = parts.next()?.to_owned();
        let queue = parts.next()?.to_owned();
        Some(Self {
            routing_key,
            pattern,
            queue,
        })
    }

    /// The member string.
    pub fn encode(&self) -> String {
        format!(
            "{}{SEP}{}{SEP}{}",
            self.routing_key, self.pattern, self.queue
        )
    }
}

/// Prefix of every binding set key.
pub const BINDING_PREFIX: &str = "_kombu.binding.";

/// The exchange named by a binding set key (`_kombu.binding.celery` ->
/// `celery`), ignoring kombu's internal `_kombu.binding_permanent.*` and
/// `_kombu.binding_deadlines` keys (they do not match the prefix).
pub fn parse_binding_key(key: &str) -> Option<&str> {
    key.strip_prefix(BINDING_PREFIX).filter(|x| !x.is_empty())
}

/// Redis names for one broker connection: db number, `global_keyprefix` and
/// the exchange settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNames {
    /// Database number from the broker URL.
    pub db: u32,
    /// kombu's `global_keyprefix` transport option (empty by default),
    /// prepended to every key and channel.
    pub key_prefix: String,
    /// `event_exchange` (default `celeryev`).
    pub event_exchange: String,
    /// `control_exchange` (default `celery`).
    pub control_exchange: String,
}

impl Default for RedisNames {
    fn default() -> Self {
        Self::new(0)
    }
}

impl RedisNames {
    /// Names with Celery's defaults for database `db`.
    pub fn new(db: u32) -> Self {
        Self {
            db,
            key_prefix: String::new(),
            event_exchange: EVENT_EXCHANGE.to_owned(),
            control_exchange: DEFAULT_CONTROL_EXCHANGE.to_owned(),
        }
    }

    /// Set `global_keyprefix`.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// A key with the prefix applied.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }

    /// The fanout channel for `exchange` and `routing_key`:
    /// `{prefix}/{db}.{exchange}` or `{prefix}/{db}.{exchange}/{routing_key}`.
    pub fn fanout_channel(&self, exchange: &str, routing_key: &str) -> String {
        if routing_key.is_empty() {
            format!("{}/{}.{exchange}", self.key_prefix, self.db)
        } else {
            format!("{}/{}.{exchange}/{routing_key}", self.key_prefix, self.db)
        }
    }

    /// The channel an event is published on: `/0.celeryev/task.multi`.
    pub fn event_channel(&self, routing_key: &str) -> String {
        self.fanout_channel(&self.event_exchange, routing_key)
    }

    /// The pattern to PSUBSCRIBE for all events: `/0.celeryev/*`.
    pub fn event_pattern(&self) -> String {
        self.event_channel("*")
    }

    /// Strip `{prefix}/{db}.{event_exchange}/` from a channel, giving the
    /// routing key (`task.multi`), if the channel is an event channel.
    pub fn event_routing_key_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let head = self.event_channel("");
        channel.strip_prefix(head.as_str())?.strip_prefix('/')
    }

    /// The channel control requests are published on: `/0.celery.pidbox`.
    pub fn pidbox_channel(&self) -> String {
        self.fanout_channel(&pidbox_exchange(&self.control_exchange), "")
    }

    /// The reply list for `oid`: `{prefix}<oid>.reply.celery.pidbox`.
    pub fn reply_list(&self, oid: &str) -> String {
        self.key(&reply_queue(oid, &self.control_exchange))
    }

    /// The binding set that routes replies:
    /// `{prefix}_kombu.binding.reply.celery.pidbox`.
    pub fn reply_binding_key(&self) -> String {
        self.binding_key(&reply_exchange(&self.control_exchange))
    }

    /// The member to SADD to [`RedisNames::reply_binding_key`] before
    /// publishing a request, or replies are silently dropped:
    /// `<oid>\x06\x16\x06\x16<oid>.reply.celery.pidbox` (members are not
    /// prefixed; kombu prefixes keys only).
    pub fn reply_binding_member(&self, oid: &str) -> String {
        BindingMember {
            routing_key: oid.to_owned(),
            pattern: String::new(),
            queue: reply_queue(oid, &self.control_exchange),
        }
        .encode()
    }

    /// The binding set of `exchange`: `{prefix}_kombu.binding.<exchange>`.
    pub fn binding_key(&self, exchange: &str) -> String {
        self.key(&format!("{BINDING_PREFIX}{exchange}"))
    }

    /// The SCAN pattern for all binding sets.
    pub fn binding_scan_pattern(&self) -> String {
        self.key(&format!("{BINDING_PREFIX}*"))
    }

    /// The four lists of `queue`, prefixed, in BRPOP order.
    pub fn queue_lists(&self, queue: &str) -> [String; 4] {
        priority_list_names(queue).map(|n| self.key(&n))
    }

    /// The list a task of `priority` goes to.
    pub fn queue_list_for(&self, queue: &str, priority: u8) -> String {
        self.key(&priority_list_name(queue, priority_bucket(priority)))
    }

    /// The `unacked` hash.
    pub fn unacked_hash(&self) -> String {
        self.key("unacked")
    }

    /// The `unacked_index` zset.
    pub fn unacked_index(&self) -> String {
        self.key("unacked_index")
    }
}

/// An AMQP exchange type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// `direct`.
    Direct,
    /// `fanout`.
    Fanout,
    /// `topic`.
    Topic,
}

impl ExchangeKind {
    /// The AMQP name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
        }
    }
}

/// How to declare one exchange so the flags match Celery's (a mismatch is
/// PRECONDITION_FAILED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
}

/// How to declare one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// Name.
    pub name: String,
    /// Durable flag.
    pub durable: bool,
    /// Exclusive flag.
    pub exclusive: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// `x-*` arguments, typed for the field table.
    pub arguments: Vec<(String, AmqpField)>,
}

/// The event exchange: topic, durable.
pub fn amqp_event_exchange(name: &str) -> ExchangeSpec {
    ExchangeSpec {
        name: name.to_owned(),
        kind: ExchangeKind::Topic,
        durable: true,
        auto_delete: false,
    }
}

/// An event receiver queue `celeryev.<uuid>`: exclusive, auto-delete,
/// `x-message-ttl` 5000, `x-expires` 60000 (bind it with `#`).
pub fn amqp_event_queue(uuid: &str) -> QueueSpec {
    QueueSpec {
        name: format!("{EVENT_EXCHANGE}.{uuid}"),
        durable: false,
        exclusive: true,
        auto_delete: true,
        arguments: vec![
            ("x-message-ttl".into(), AmqpField::Int(5000)),
            ("x-expires".into(), AmqpField::Int(60000)),
        ],
    }
}

/// The control exchange `celery.pidbox`: fanout, not durable.
pub fn amqp_pidbox_exchange(control_exchange: &str) -> ExchangeSpec {
    ExchangeSpec {
        name: pidbox_exchange(control_exchange),
        kind: ExchangeKind::Fanout,
        durable: false,
        auto_delete: false,
    }
}

/// The reply exchange `reply.celery.pidbox`: direct, not durable.
pub fn amqp_reply_exchange(control_exchange: &str) -> ExchangeSpec {
    ExchangeSpec {
        name: reply_exchange(control_exchange),
        kind: ExchangeKind::Direct,
        durable: false,
        auto_delete: false,
    }
}

/// The reply queue `<oid>.reply.celery.pidbox`: exclusive, auto-delete,
/// `x-expires` 10000, `x-message-ttl` 300000; bind it to the reply exchange
/// with routing key `<oid>`.
pub fn amqp_reply_queue(oid: &str, control_exchange: &str) -> QueueSpec {
    QueueSpec {
        name: reply_queue(oid, control_exchange),
        durable: false,
        exclusive: true,
        auto_delete: true,
        arguments: vec![
            ("x-expires".into(), AmqpField::Int(10000)),
            ("x-message-ttl".into(), AmqpField::Int(300_000)),
        ],
    }
}

/// A task queue as Celery declares it: classic, durable, no arguments.
pub fn amqp_task_queue(name: &str) -> QueueSpec {
    QueueSpec {
        name: name.to_owned(),
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: Vec::new(),
    }
}

/// The direct exchange Celery declares beside a task queue (same name,
/// durable). Tasks are published to the default exchange `""` regardless.
pub fn amqp_task_exchange(name: &str) -> ExchangeSpec {
    ExchangeSpec {
        name: name.to_owned(),
        kind: ExchangeKind::Direct,
        durable: true,
        auto_delete: false,
    }
}

/// A worker's own control queue `<hostname>.celery.pidbox` (exclusive,
/// auto-delete, `x-expires` 10000, `x-message-ttl` 300000), as captured in
/// `topology-while-busy.json`. Workers declare it; tools only need it to
/// recognise worker queues.
pub fn amqp_worker_pidbox_queue(hostname: &str, control_exchange: &str) -> QueueSpec {
    QueueSpec {
        name: format!("{hostname}.{}", pidbox_exchange(control_exchange)),
        durable: false,
        exclusive: true,
        auto_delete: true,
        arguments: vec![
            ("x-expires".into(), AmqpField::Int(10000)),
            ("x-message-ttl".into(), AmqpField::Int(300_000)),
        ],
    }
}
