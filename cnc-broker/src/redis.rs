//! Redis adapter (fred): the kombu virtual transport and the Redis result
//! backend, per README sections 1b, 1c, 3a, 4b, 5a and 6a.
//!
//! * Events: a dedicated connection `PSUBSCRIBE`s `{prefix}/{db}.celeryev/*`.
//!   It has no reconnect policy on purpose: a lost connection ends the
//!   stream with a temporary error and the caller resubscribes
//!   ([`crate::stream::reconnecting`]), so a gap is visible instead of hidden.
//!   fred's pub/sub buffer is a broadcast channel; if we ever lag behind it,
//!   the skipped messages are counted as dropped.
//! * Commands share one multiplexed connection, except control broadcasts,
//!   which block on `BRPOP` and so get a short-lived connection each.
//! * Selective purge runs as one Lua script per queue: atomic against
//!   concurrent publishers and workers, so the remaining messages keep their
//!   order exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scan::Scanner;
use futures::StreamExt;
use serde_json::Value;

use crate::api::{
    BroadcastOptions, Broker, BrokerKind, Capabilities, PurgeFilter, QueueDepth, ResultBackend,
    TaskResult, WorkerReply, prepare_request,
};
use crate::error::{BrokerError, BrokerResult, ErrorKind};
use crate::protocol::control::ControlRequest;
use crate::protocol::names::{BindingMember, parse_binding_key, pidbox_exchange, reply_exchange};
use crate::protocol::{
    Message, RedisNames, decode_redis_envelope, decode_redis_event, encode_redis_envelope,
};
use crate::stream::{EventStream, EventStreamOptions};
use crate::url::{redact, redis_db};

/// Options of the Redis adapter beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// kombu's `global_keyprefix` transport option.
    pub key_prefix: String,
}

fn drv(what: &str, url: &str, e: fred::error::Error) -> BrokerError {
    let kind = match e.kind() {
        fred::error::ErrorKind::IO
        | fred::error::ErrorKind::Canceled
        | fred::error::ErrorKind::Timeout
        | fred::error::ErrorKind::Routing
        | fred::error::ErrorKind::Backpressure => ErrorKind::Connection,
        fred::error::ErrorKind::Config | fred::error::ErrorKind::Url => ErrorKind::InvalidUrl,
        _ => ErrorKind::Rejected,
    };
    // fred's messages name hosts, never passwords; still, keep the URL out of
    // our own text except in redacted form.
    BrokerError::new(kind, format!("redis {what} ({})", redact(url))).with_source(e)
}

struct Inner {
    url: String,
    redacted: String,
    config: Config,
    names: RedisNames,
    client: Client,
}

/// A Redis broker. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.inner.redacted)
            .field("names", &self.inner.names)
            .finish()
    }
}

fn build_client(config: &Config, broadcast_capacity: usize) -> BrokerResult<Client> {
    Builder::from_config(config.clone())
        .with_performance_config(|p| {
            p.broadcast_channel_capacity = broadcast_capacity;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
        })
        .build()
        .map_err(|e| BrokerError::new(ErrorKind::InvalidUrl, "redis client config").with_source(e))
}

/// How long one command on a long-lived command connection may take,
/// reconnection included, before it fails with a temporary error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// The long-lived, shared command connection (broker and result backend).
/// Unlike the event subscriber it reconnects by itself (capped exponential,
/// 100 ms to 5 s, forever): without a policy, fred leaves a client whose
/// server restarted disconnected for good and its commands wait forever
/// (found by the server-restart test). Commands are bounded by
/// [`COMMAND_TIMEOUT`]; never run blocking commands (`BRPOP`) on it.
fn build_command_client(config: &Config) -> BrokerResult<Client> {
    Builder::from_config(config.clone())
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| BrokerError::new(ErrorKind::InvalidUrl, "redis client config").with_source(e))
}

impl RedisBroker {
    /// Connect to `url` (`redis://[:password@]host[:port][/db]`).
    pub async fn connect(url: &str, opts: RedisOptions) -> BrokerResult<Self> {
        let redacted = redact(url);
        let db = redis_db(url)?;
        let config = Config::from_url(url).map_err(|e| {
            BrokerError::new(ErrorKind::InvalidUrl, format!("bad Redis URL {redacted}"))
                .with_source(e)
        })?;
        let client = build_command_client(&config)?;
        client.init().await.map_err(|e| drv("connect", url, e))?;
        let names = RedisNames::new(db).with_key_prefix(opts.key_prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                redacted,
                config,
                names,
                client,
            }),
        })
    }

    /// The names (db, prefix, exchanges) this broker uses.
    pub fn names(&self) -> &RedisNames {
        &self.inner.names
    }

    fn err(&self, what: &str, e: fred::error::Error) -> BrokerError {
        drv(what, &self.inner.url, e)
    }

    async fn short_lived_client(&self) -> BrokerResult<Client> {
        let c = build_client(&self.inner.config, 32)?;
        c.init().await.map_err(|e| self.err("connect", e))?;
        Ok(c)
    }

    /// Publish a raw payload on the event channel for `routing_key` (tests
    /// and benches use it to inject messages). Returns the receiver count.
    pub async fn publish_event_raw(
        &self,
        routing_key: &str,
        payload: Vec<u8>,
    ) -> BrokerResult<u64> {
        let ch = self.inner.names.event_channel(routing_key);
        self.inner
            .client
            .publish(ch, payload)
            .await
            .map_err(|e| self.err("publish", e))
    }

    async fn collect_replies(
        &self,
        request: &ControlRequest,
        opts: &BroadcastOptions,
    ) -> BrokerResult<Vec<WorkerReply>> {
        let names = &self.inner.names;
        let oid = uuid::Uuid::new_v4().to_string();
        let request = prepare_request(request, Some(&oid), &names.control_exchange);
        let ticket = request.ticket.clone().unwrap_or_default();
        let conn = self.short_lived_client().await?;
        let binding_key = names.reply_binding_key();
        let member = names.reply_binding_member(&oid);
        let reply_lists = names.queue_lists(&crate::protocol::names::reply_queue(
            &oid,
            &names.control_exchange,
        ));
        // Without this binding member kombu drops the replies (README 4b).
        let _: i64 = conn
            .sadd(&binding_key, member.clone())
            .await
            .map_err(|e| self.err("sadd", e))?;
        let result = async {
            self.publish_control(&conn, &request, opts).await?;
            let deadline = Instant::now() + opts.timeout;
            let mut replies = Vec::new();
            loop {
                if opts.limit.is_some_and(|l| replies.len() >= l) {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // BRPOP's timeout has a resolution of 1 ms on Redis >= 6.
                let secs = left.as_secs_f64().max(0.01);
                let popped: Option<(String, Vec<u8>)> =
                    match conn.brpop(reply_lists.to_vec(), secs).await {
                        Ok(p) => p,
                        // fred also times blocking commands out on the
                        // client side, racing the server's own timeout.
                        Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => None,
                        Err(e) => return Err(self.err("brpop", e)),
                    };
                let Some((_, raw)) = popped else { break };
                match decode_redis_envelope(&raw) {
                    Ok(msg) => crate::api::push_replies(&msg, &ticket, &mut replies),
                    Err(e) => tracing::debug!(error = %e, "undecodable control reply"),
                }
            }
            Ok(replies)
        }
        .await;
        let _: Result<i64, _> = conn.srem(&binding_key, member).await;
        let _: Result<i64, _> = conn.del(reply_lists.to_vec()).await;
        let _ = conn.quit().await;
        result
    }

    async fn publish_control(
        &self,
        conn: &Client,
        request: &ControlRequest,
        opts: &BroadcastOptions,
    ) -> BrokerResult<()> {
        let names = &self.inner.names;
        let mut msg = request.to_message(
            1,
            cnc_model::now() + opts.timeout.as_secs_f64(),
            &names.control_exchange,
        );
        msg.properties.delivery_tag = Some(uuid::Uuid::new_v4().to_string());
        let raw = encode_redis_envelope(&msg);
        let _: i64 = conn
            .publish(names.pidbox_channel(), raw)
            .await
            .map_err(|e| self.err("publish", e))?;
        Ok(())
    }
}

/// Lua: rewrite the lists in KEYS without the messages whose header ARGV[1]
/// equals ARGV[2], keeping the order of the rest. Atomic (one script).
const PURGE_MATCHING: &str = r#"
local removed = 0
for _, key in ipairs(KEYS) do
  local items = redis.call('LRANGE', key, 0, -1)
  local keep = {}
  for _, raw in ipairs(items) do
    local ok, env = pcall(cjson.decode, raw)
    local hit = false
    if ok and type(env) == 'table' and type(env['headers']) == 'table' then
      hit = env['headers'][ARGV[1]] == ARGV[2]
    end
    if hit then removed = removed + 1 else keep[#keep + 1] = raw end
  end
  if #keep ~= #items then
    redis.call('DEL', key)
    local i = 1
    while i <= #keep do
      local j = math.min(i + 999, #keep)
      redis.call('RPUSH', key, unpack(keep, i, j))
      i = j + 1
    end
  end
end
return removed
"#;

/// Lua: LLEN + DEL of every key in KEYS, returning the sum (kombu's purge).
const PURGE_ALL: &str = r#"
local n = 0
for _, key in ipairs(KEYS) do
  n = n + redis.call('LLEN', key)
  redis.call('DEL', key)
end
return n
"#;

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Redis
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            consumer_count: false,
            broker_queue_discovery: true,
            atomic_selective_purge: true,
        }
    }

    fn redacted_url(&self) -> String {
        self.inner.redacted.clone()
    }

    async fn events(&self, opts: EventStreamOptions) -> BrokerResult<EventStream> {
        // A big broadcast buffer: the reader below must never be the reason
        // fred drops a message.
        let client = build_client(&self.inner.config, opts.capacity.max(4096))?;
        let mut rx = client.message_rx();
        let handle = client.init().await.map_err(|e| self.err("connect", e))?;
        client
            .psubscribe(self.inner.names.event_pattern())
            .await
            .map_err(|e| self.err("psubscribe", e))?;
        let (sink, mut stream) = EventStream::channel(&opts);
        let limits = opts.limits;
        let url = self.inner.redacted.clone();
        let reader = tokio::spawn(async move {
            let mut handle = handle;
            loop {
                tokio::select! {
                    biased;
                    msg = rx.recv() => match msg {
                        Ok(m) => {
                            let decoded = match m.value.as_bytes() {
                                Some(b) => decode_redis_event(b, &limits),
                                None => Err(crate::protocol::DecodeError::NotUtf8 { what: "message" }),
                            };
                            if !sink.deliver(decoded) {
                                break;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => sink.lost(n),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            sink.fail(BrokerError::connection(format!("redis event connection closed ({url})")));
                            return;
                        }
                    },
                    res = &mut handle => {
                        // Drain what was already buffered, then report.
                        while let Ok(m) = rx.try_recv() {
                            if let Some(b) = m.value.as_bytes() {
                                sink.deliver(decode_redis_event(b, &limits));
                            }
                        }
                        let why = match res {
                            Ok(Ok(())) => "closed".to_owned(),
                            Ok(Err(e)) => format!("lost: {}", e.kind().to_str()),
                            Err(_) => "task ended".to_owned(),
                        };
                        tracing::warn!(url = %url, why = %why, "redis event connection ended");
                        sink.fail(BrokerError::connection(format!("redis event connection {why} ({url})")));
                        return;
                    }
                }
                if sink.is_closed() {
                    break;
                }
            }
            let _ = client.quit().await;
        });
        stream.attach(reader);
        if let Some(every) = opts.enable_events_every {
            let me = self.clone();
            stream.attach(tokio::spawn(async move {
                loop {
                    let cmd = ControlRequest::enable_events();
                    let o = BroadcastOptions {
                        reply: false,
                        ..BroadcastOptions::default()
                    };
                    if let Err(e) = me.broadcast(&cmd, &o).await {
                        tracing::debug!(error = %e, "enable_events broadcast failed");
                    }
                    tokio::time::sleep(every).await;
                }
            }));
        }
        Ok(stream)
    }

    async fn send_task(&self, queue: &str, mut message: Message) -> BrokerResult<()> {
        if queue.is_empty() {
            return Err(BrokerError::invalid_input("empty queue name"));
        }
        let priority = message.properties.priority.unwrap_or(0);
        message.properties.delivery_info.exchange = String::new();
        message.properties.delivery_info.routing_key = queue.to_owned();
        if message.properties.delivery_tag.is_none() {
            message.properties.delivery_tag = Some(uuid::Uuid::new_v4().to_string());
        }
        if message.properties.delivery_mode.is_none() {
            message.properties.delivery_mode = Some(2);
        }
        message.properties.priority = Some(priority);
        let list = self.inner.names.queue_list_for(queue, priority);
        let _: i64 = self
            .inner
            .client
            .lpush(list, encode_redis_envelope(&message))
            .await
            .map_err(|e| self.err("lpush", e))?;
        Ok(())
    }

    async fn broadcast(
        &self,
        request: &ControlRequest,
        opts: &BroadcastOptions,
    ) -> BrokerResult<Vec<WorkerReply>> {
        if opts.reply {
            self.collect_replies(request, opts).await
        } else {
            let request = prepare_request(request, None, &self.inner.names.control_exchange);
            self.publish_control(&self.inner.client, &request, opts)
                .await?;
            Ok(Vec::new())
        }
    }

    async fn queue_depth(&self, queue: &str) -> BrokerResult<QueueDepth> {
        let pipe = self.inner.client.pipeline();
        for key in self.inner.names.queue_lists(queue) {
            let _: () = pipe.llen(key).await.map_err(|e| self.err("llen", e))?;
        }
        let counts: Vec<u64> = pipe.all().await.map_err(|e| self.err("llen", e))?;
        let mut by = [0u64; 4];
        for (slot, n) in by.iter_mut().zip(counts) {
            *slot = n;
        }
        Ok(QueueDepth {
            queue: queue.to_owned(),
            messages: by.iter().sum(),
            by_priority: Some(by),
            consumers: None,
        })
    }

    async fn discover_queues(&self) -> BrokerResult<Vec<String>> {
        let names = &self.inner.names;
        let skip = [
            pidbox_exchange(&names.control_exchange),
            reply_exchange(&names.control_exchange),
            names.event_exchange.clone(),
        ];
        let mut keys = Vec::new();
        let mut scan = self
            .inner
            .client
            .scan(names.binding_scan_pattern(), Some(200), None);
        while let Some(page) = scan.next().await {
            let mut page = page.map_err(|e| self.err("scan", e))?;
            if let Some(found) = page.take_results() {
                keys.extend(found.into_iter().filter_map(|k| k.into_string()));
            }
            page.next();
        }
        let mut queues = std::collections::BTreeSet::new();
        for key in keys {
            let Some(exchange) = key
                .strip_prefix(names.key_prefix.as_str())
                .and_then(parse_binding_key)
            else {
                continue;
            };
            if skip.iter().any(|s| s == exchange) {
                continue;
            }
            let members: Vec<String> = self
                .inner
                .client
                .smembers(&key)
                .await
                .map_err(|e| self.err("smembers", e))?;
            for m in members {
                if let Some(b) = BindingMember::parse(&m) {
                    queues.insert(b.queue);
                }
            }
        }
        Ok(queues.into_iter().collect())
    }

    async fn purge(&self, queue: &str, filter: &PurgeFilter) -> BrokerResult<u64> {
        let keys = self.inner.names.queue_lists(queue).to_vec();
        let n: u64 = match filter.header() {
            None => self
                .inner
                .client
                .eval(PURGE_ALL, keys, Vec::<String>::new())
                .await
                .map_err(|e| self.err("purge", e))?,
            Some((header, value)) => self
                .inner
                .client
                .eval(
                    PURGE_MATCHING,
                    keys,
                    vec![header.to_owned(), value.to_owned()],
                )
                .await
                .map_err(|e| self.err("purge", e))?,
        };
        Ok(n)
    }

    async fn healthcheck(&self) -> BrokerResult<()> {
        let _: String = self
            .inner
            .client
            .ping(None)
            .await
            .map_err(|e| self.err("ping", e))?;
        Ok(())
    }
}

/// The Redis result backend (`celery-task-meta-<id>` keys, README 5a).
#[derive(Clone)]
pub struct RedisResultBackend {
    url: String,
    redacted: String,
    client: Client,
}

impl std::fmt::Debug for RedisResultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResultBackend")
            .field("url", &self.redacted)
            .finish()
    }
}

/// Key prefix of task results.
pub const RESULT_KEY_PREFIX: &str = "celery-task-meta-";

impl RedisResultBackend {
    /// Connect to a `redis://` backend URL.
    pub async fn connect(url: &str) -> BrokerResult<Self> {
        let redacted = redact(url);
        let config = Config::from_url(url).map_err(|e| {
            BrokerError::new(ErrorKind::InvalidUrl, format!("bad Redis URL {redacted}"))
                .with_source(e)
        })?;
        let client = build_command_client(&config)?;
        client.init().await.map_err(|e| drv("connect", url, e))?;
        Ok(Self {
            url: url.to_owned(),
            redacted,
            client,
        })
    }

    fn err(&self, what: &str, e: fred::error::Error) -> BrokerError {
        drv(what, &self.url, e)
    }

    async fn result_keys(&self, limit: Option<usize>) -> BrokerResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut scan = self
            .client
            .scan(format!("{RESULT_KEY_PREFIX}*"), Some(500), None);
        while let Some(page) = scan.next().await {
            let mut page = page.map_err(|e| self.err("scan", e))?;
            if let Some(found) = page.take_results() {
                keys.extend(found.into_iter().filter_map(|k| k.into_string()));
            }
            if limit.is_some_and(|l| keys.len() >= l) {
                break;
            }
            page.next();
        }
        if let Some(l) = limit {
            keys.truncate(l);
        }
        Ok(keys)
    }

    async fn values(&self, keys: &[String]) -> BrokerResult<Vec<(String, Option<Vec<u8>>)>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let vals: Vec<Option<Vec<u8>>> = if chunk.len() == 1 {
                vec![
                    self.client
                        .get(&chunk[0])
                        .await
                        .map_err(|e| self.err("get", e))?,
                ]
            } else {
                self.client
                    .mget(chunk.to_vec())
                    .await
                    .map_err(|e| self.err("mget", e))?
            };
            out.extend(chunk.iter().cloned().zip(vals));
        }
        Ok(out)
    }
}

fn parse_result(key: &str, raw: &[u8]) -> Option<TaskResult> {
    let id = key.strip_prefix(RESULT_KEY_PREFIX).unwrap_or(key);
    let v: Value = serde_json::from_slice(raw).ok()?;
    TaskResult::from_redis_value(id, v)
}

#[async_trait]
impl ResultBackend for RedisResultBackend {
    fn redacted_url(&self) -> String {
        self.redacted.clone()
    }

    async fn get(&self, task_id: &str) -> BrokerResult<Option<TaskResult>> {
        let key = format!("{RESULT_KEY_PREFIX}{task_id}");
        let raw: Option<Vec<u8>> = self
            .client
            .get(&key)
            .await
            .map_err(|e| self.err("get", e))?;
        match raw {
            None => Ok(None),
            Some(raw) => parse_result(&key, &raw).map(Some).ok_or_else(|| {
                BrokerError::decode(format!("result of {task_id} is not a JSON object"))
            }),
        }
    }

    async fn list(&self, limit: usize) -> BrokerResult<Vec<TaskResult>> {
        let keys = self.result_keys(Some(limit)).await?;
        Ok(self
            .values(&keys)
            .await?
            .into_iter()
            .filter_map(|(k, v)| v.and_then(|raw| parse_result(&k, &raw)))
            .collect())
    }

    async fn delete(&self, task_id: &str) -> BrokerResult<bool> {
        let n: i64 = self
            .client
            .del(format!("{RESULT_KEY_PREFIX}{task_id}"))
            .await
            .map_err(|e| self.err("del", e))?;
        Ok(n > 0)
    }

    async fn delete_by_name(&self, name: &str) -> BrokerResult<u64> {
        let keys = self.result_keys(None).await?;
        let doomed: Vec<String> = self
            .values(&keys)
            .await?
            .into_iter()
            .filter(|(k, v)| {
                v.as_deref()
                    .and_then(|raw| parse_result(k, raw))
                    .is_some_and(|r| r.name.as_deref() == Some(name))
            })
            .map(|(k, _)| k)
            .collect();
        let mut n = 0u64;
        for chunk in doomed.chunks(500) {
            let d: u64 = self
                .client
                .del(chunk.to_vec())
                .await
                .map_err(|e| self.err("del", e))?;
            n += d;
        }
        Ok(n)
    }

    async fn delete_all(&self) -> BrokerResult<u64> {
        let keys = self.result_keys(None).await?;
        let mut n = 0u64;
        for chunk in keys.chunks(500) {
            let d: u64 = self
                .client
                .del(chunk.to_vec())
                .await
                .map_err(|e| self.err("del", e))?;
            n += d;
        }
        Ok(n)
    }

    async fn healthcheck(&self) -> BrokerResult<()> {
        let _: String = self
            .client
            .ping(None)
            .await
            .map_err(|e| self.err("ping", e))?;
        Ok(())
    }

    /// What Celery's Redis backend does for `AbortableAsyncResult.abort()`:
    /// skip a stored `SUCCESS`, else `SETEX celery-task-meta-<id>` for
    /// `result_expires` (Celery's default, one day: the app's own setting is
    /// not known here) and `PUBLISH` the same value on the key's channel,
    /// in one pipeline.
    async fn mark_aborted(&self, task_id: &str) -> BrokerResult<()> {
        /// Celery's default `result_expires`.
        const RESULT_EXPIRES_SECS: i64 = 86_400;
        let key = format!("{RESULT_KEY_PREFIX}{task_id}");
        let current: Option<Vec<u8>> = self
            .client
            .get(&key)
            .await
            .map_err(|e| self.err("get", e))?;
        // Celery decodes the current meta and keeps a SUCCESS; a value it
        // cannot decode makes Celery fail, we overwrite it instead.
        if current
            .as_deref()
            .and_then(|raw| parse_result(&key, raw))
            .is_some_and(|r| r.status == "SUCCESS")
        {
            return Ok(());
        }
        let meta = crate::api::aborted_meta(task_id);
        let pipe = self.client.pipeline();
        let _: () = pipe
            .set(
                &key,
                meta.as_str(),
                Some(Expiration::EX(RESULT_EXPIRES_SECS)),
                None,
                false,
            )
            .await
            .map_err(|e| self.err("set", e))?;
        let _: () = pipe
            .publish(&key, meta.as_str())
            .await
            .map_err(|e| self.err("publish", e))?;
        let _: Vec<fred::types::Value> =
            pipe.all().await.map_err(|e| self.err("setex+publish", e))?;
        Ok(())
    }
}
