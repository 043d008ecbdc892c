//! RabbitMQ adapter (lapin), per README sections 1a, 2a-2c, 3a, 4, 6b.
//!
//! * Events: a dedicated connection declares the durable topic exchange
//!   `celeryev`, an exclusive auto-delete `celeryev.<uuid>` queue with
//!   Celery's `x-message-ttl` 5000 / `x-expires` 60000, binds it with `#`
//!   and consumes with no-ack (prefetch set anyway, for brokers that apply
//!   it). A closed connection or channel ends the stream with a temporary
//!   error.
//! * Commands use one shared connection, re-opened when it was lost, and a
//!   fresh channel per operation: AMQP closes a channel on any error (404 on
//!   a passive declare, 406 on mismatched flags), so an error never poisons
//!   the next call.
//! * Selective purge (by task name or group id) cannot be atomic on
//!   RabbitMQ. We take every ready message with `basic.get` (unacked, so
//!   nothing is lost if we die: RabbitMQ requeues them), republish the ones
//!   that do not match to the same queue (publisher confirms on), and only
//!   then ack everything. What RabbitMQ cannot preserve:
//!   - order relative to messages published concurrently by others (ours
//!     go to the tail, behind anything published during the purge);
//!   - the `redelivered` flag: republished messages are new messages;
//!   - messages held unacked by workers (prefetched, ETA) are not ready, so
//!     they are neither seen nor removed (the same is true on Redis).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::api::{
    BroadcastOptions, Broker, BrokerKind, Capabilities, PurgeFilter, QueueDepth, WorkerReply,
    prepare_request,
};
use crate::error::{BrokerError, BrokerResult, ErrorKind};
use crate::protocol::control::ControlRequest;
use crate::protocol::message::{AmqpField, amqp_headers};
use crate::protocol::names::{
    ExchangeKind as SpecKind, ExchangeSpec, QueueSpec, amqp_event_exchange, amqp_event_queue,
    amqp_pidbox_exchange, amqp_reply_exchange, amqp_reply_queue, amqp_task_queue,
};
use crate::protocol::{Message, decode_event_message};
use crate::stream::{EventStream, EventStreamOptions};
use crate::url::redact;

/// Options of the AMQP adapter beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct AmqpOptions {
    /// Connection name shown by RabbitMQ (`user_provided_name`); the event
    /// connection gets `-events` appended.
    pub connection_name: Option<String>,
}

/// Control exchange setting (Celery's `control_exchange`).
const CONTROL_EXCHANGE: &str = "celery";
/// Event exchange setting (Celery's `event_exchange`).
const EVENT_EXCHANGE: &str = "celeryev";

fn drv(what: &str, url: &str, e: lapin::Error) -> BrokerError {
    let text = e.to_string();
    let kind = if text.contains("NOT_FOUND") || text.contains("404") {
        ErrorKind::NotFound
    } else if text.contains("ACCESS_REFUSED") || text.contains("PRECONDITION") {
        ErrorKind::Rejected
    } else {
        ErrorKind::Connection
    };
    BrokerError::new(kind, format!("amqp {what} ({})", redact(url))).with_source(e)
}

/// A RabbitMQ broker.
pub struct AmqpBroker {
    url: String,
    redacted: String,
    name: Option<String>,
    conn: Mutex<Option<std::sync::Arc<Connection>>>,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.redacted)
            .field("connection_name", &self.name)
            .finish()
    }
}

async fn open(url: &str, name: Option<String>) -> BrokerResult<Connection> {
    let mut props = ConnectionProperties::default();
    if let Some(n) = name {
        props = props.with_connection_name(LongString::from(n));
    }
    Connection::connect(url, props)
        .await
        .map_err(|e| drv("connect", url, e))
}

fn table(args: &[(String, AmqpField)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        t.insert(ShortString::from(k.as_str()), to_amqp(v));
    }
    t
}

fn to_amqp(f: &AmqpField) -> AMQPValue {
    match f {
        AmqpField::Void => AMQPValue::Void,
        AmqpField::Bool(b) => AMQPValue::Boolean(*b),
        AmqpField::Int(i) => AMQPValue::LongInt(*i),
        AmqpField::Long(i) => AMQPValue::LongLongInt(*i),
        AmqpField::Double(d) => AMQPValue::Double(*d),
        AmqpField::LongString(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        AmqpField::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(to_amqp).collect::<Vec<_>>(),
        )),
        AmqpField::Table(fields) => AMQPValue::FieldTable(table(fields)),
    }
}

fn from_amqp(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        AMQPValue::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => Value::from(d.value),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(from_amqp).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(headers_to_json(t)),
        AMQPValue::ByteArray(_) | AMQPValue::Void => Value::Null,
    }
}

fn headers_to_json(t: &FieldTable) -> Map<String, Value> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), from_amqp(v)))
        .collect()
}

/// Build a [`Message`] from an AMQP delivery (headers included).
pub fn message_from_delivery(
    props: &BasicProperties,
    body: Vec<u8>,
    exchange: &str,
    routing_key: &str,
) -> Message {
    let mut m = Message::json(body);
    m.content_type = props
        .content_type()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    m.content_encoding = props
        .content_encoding()
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    if let Some(h) = props.headers() {
        m.headers = headers_to_json(h);
    }
    m.properties.correlation_id = props
        .correlation_id()
        .as_ref()
        .map(|s| s.as_str().to_owned());
    m.properties.reply_to = props.reply_to().as_ref().map(|s| s.as_str().to_owned());
    m.properties.delivery_mode = *props.delivery_mode();
    m.properties.priority = *props.priority();
    m.properties.expiration = props.expiration().as_ref().map(|s| s.as_str().to_owned());
    m.properties.delivery_info.exchange = exchange.to_owned();
    m.properties.delivery_info.routing_key = routing_key.to_owned();
    m
}

fn properties_of(msg: &Message) -> BasicProperties {
    let ct = if msg.content_type.is_empty() {
        "application/json"
    } else {
        &msg.content_type
    };
    let ce = if msg.content_encoding.is_empty() {
        "utf-8"
    } else {
        &msg.content_encoding
    };
    let mut p = BasicProperties::default()
        .with_content_type(ShortString::from(ct))
        .with_content_encoding(ShortString::from(ce))
        .with_headers(table(&amqp_headers(&msg.headers)))
        .with_delivery_mode(msg.properties.delivery_mode.unwrap_or(2))
        .with_priority(msg.properties.priority.unwrap_or(0));
    if let Some(c) = &msg.properties.correlation_id {
        p = p.with_correlation_id(ShortString::from(c.as_str()));
    }
    if let Some(r) = &msg.properties.reply_to {
        p = p.with_reply_to(ShortString::from(r.as_str()));
    }
    if let Some(e) = &msg.properties.expiration {
        p = p.with_expiration(ShortString::from(e.as_str()));
    }
    p
}

fn kind_of(k: SpecKind) -> ExchangeKind {
    match k {
        SpecKind::Direct => ExchangeKind::Direct,
        SpecKind::Fanout => ExchangeKind::Fanout,
        SpecKind::Topic => ExchangeKind::Topic,
    }
}

impl AmqpBroker {
    /// Connect to `url` (`amqp://user:pass@host:port/vhost`).
    pub async fn connect(url: &str, opts: AmqpOptions) -> BrokerResult<Self> {
        let conn = open(url, opts.connection_name.clone()).await?;
        Ok(Self {
            url: url.to_owned(),
            redacted: redact(url),
            name: opts.connection_name,
            conn: Mutex::new(Some(std::sync::Arc::new(conn))),
        })
    }

    fn err(&self, what: &str, e: lapin::Error) -> BrokerError {
        drv(what, &self.url, e)
    }

    /// A fresh channel on the shared connection (re-opened if lost).
    async fn channel(&self) -> BrokerResult<Channel> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.status().connected() {
                if let Ok(ch) = c.create_channel().await {
                    return Ok(ch);
                }
            }
        }
        let c = std::sync::Arc::new(open(&self.url, self.name.clone()).await?);
        let ch = c
            .create_channel()
            .await
            .map_err(|e| self.err("channel", e))?;
        *guard = Some(c);
        Ok(ch)
    }

    async fn declare_exchange(&self, ch: &Channel, spec: &ExchangeSpec) -> BrokerResult<()> {
        ch.exchange_declare(
            ShortString::from(spec.name.as_str()),
            kind_of(spec.kind),
            ExchangeDeclareOptions {
                durable: spec.durable,
                auto_delete: spec.auto_delete,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| self.err("exchange.declare", e))
    }

    async fn declare_queue(&self, ch: &Channel, spec: &QueueSpec) -> BrokerResult<()> {
        ch.queue_declare(
            ShortString::from(spec.name.as_str()),
            QueueDeclareOptions {
                durable: spec.durable,
                exclusive: spec.exclusive,
                auto_delete: spec.auto_delete,
                ..QueueDeclareOptions::default()
            },
            table(&spec.arguments),
        )
        .await
        .map(|_| ())
        .map_err(|e| self.err("queue.declare", e))
    }

    async fn publish_control(
        &self,
        ch: &Channel,
        request: &ControlRequest,
        timeout: Duration,
    ) -> BrokerResult<()> {
        self.declare_exchange(ch, &amqp_pidbox_exchange(CONTROL_EXCHANGE))
            .await?;
        let msg = request.to_message(
            1,
            cnc_model::now() + timeout.as_secs_f64(),
            CONTROL_EXCHANGE,
        );
        ch.basic_publish(
            ShortString::from(amqp_pidbox_exchange(CONTROL_EXCHANGE).name.as_str()),
            ShortString::from(""),
            BasicPublishOptions::default(),
            &msg.body,
            properties_of(&msg),
        )
        .await
        .map_err(|e| self.err("basic.publish", e))?
        .await
        .map_err(|e| self.err("basic.publish", e))?;
        Ok(())
    }

    /// Publish a raw event payload to the `celeryev` exchange (tests,
    /// benches).
    pub async fn publish_event_raw(
        &self,
        routing_key: &str,
        content_type: &str,
        payload: &[u8],
    ) -> BrokerResult<()> {
        let ch = self.channel().await?;
        self.declare_exchange(&ch, &amqp_event_exchange(EVENT_EXCHANGE))
            .await?;
        ch.basic_publish(
            ShortString::from(EVENT_EXCHANGE),
            ShortString::from(routing_key),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default()
                .with_content_type(ShortString::from(content_type))
                .with_content_encoding(ShortString::from("utf-8"))
                .with_delivery_mode(1),
        )
        .await
        .map_err(|e| self.err("basic.publish", e))?
        .await
        .map_err(|e| self.err("basic.publish", e))?;
        let _ = ch.close(200, ShortString::from("bye")).await;
        Ok(())
    }
}

/// A fast publisher of pre-rendered event messages to the event exchange,
/// on its own connection and channel (load generators and benches).
pub struct AmqpEventPublisher {
    channel: Channel,
    _conn: Connection,
    url: String,
}

impl std::fmt::Debug for AmqpEventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpEventPublisher")
            .field("url", &redact(&self.url))
            .finish()
    }
}

impl AmqpEventPublisher {
    /// Publish one JSON event payload (an object or a `task.multi` array)
    /// with `routing_key`, as a worker does: `delivery_mode` 1, no confirm.
    pub async fn publish(&self, routing_key: &str, body: &[u8]) -> BrokerResult<()> {
        let props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_content_encoding(ShortString::from("utf-8"))
            .with_delivery_mode(1);
        self.channel
            .basic_publish(
                ShortString::from(EVENT_EXCHANGE),
                ShortString::from(routing_key),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .map_err(|e| drv("basic.publish", &self.url, e))?;
        Ok(())
    }
}

impl AmqpBroker {
    /// Open an [`AmqpEventPublisher`] (declares the event exchange).
    pub async fn event_publisher(&self) -> BrokerResult<AmqpEventPublisher> {
        let conn = open(
            &self.url,
            self.name.as_ref().map(|n| format!("{n}-publisher")),
        )
        .await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| self.err("channel", e))?;
        self.declare_exchange(&channel, &amqp_event_exchange(EVENT_EXCHANGE))
            .await?;
        Ok(AmqpEventPublisher {
            channel,
            _conn: conn,
            url: self.url.clone(),
        })
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Amqp
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            consumer_count: true,
            broker_queue_discovery: false,
            atomic_selective_purge: false,
        }
    }

    fn redacted_url(&self) -> String {
        self.redacted.clone()
    }

    async fn events(&self, opts: EventStreamOptions) -> BrokerResult<EventStream> {
        let conn = open(&self.url, self.name.as_ref().map(|n| format!("{n}-events"))).await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| self.err("channel", e))?;
        self.declare_exchange(&ch, &amqp_event_exchange(EVENT_EXCHANGE))
            .await?;
        let spec = amqp_event_queue(&uuid::Uuid::new_v4().to_string());
        self.declare_queue(&ch, &spec).await?;
        ch.queue_bind(
            ShortString::from(spec.name.as_str()),
            ShortString::from(EVENT_EXCHANGE),
            ShortString::from("#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| self.err("queue.bind", e))?;
        ch.basic_qos(2000, BasicQosOptions::default())
            .await
            .map_err(|e| self.err("basic.qos", e))?;
        let mut consumer = ch
            .basic_consume(
                ShortString::from(spec.name.as_str()),
                ShortString::from(""),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.err("basic.consume", e))?;
        let (sink, mut stream) = EventStream::channel(&opts);
        let limits = opts.limits;
        let url = self.redacted.clone();
        stream.attach(tokio::spawn(async move {
            // Keep the connection alive as long as the reader runs.
            let conn = conn;
            let _ch = ch;
            loop {
                match consumer.next().await {
                    Some(Ok(d)) => {
                        // Events need only the body and its content type.
                        let mut m = Message::json(d.data);
                        if let Some(ct) = d.properties.content_type() {
                            m.content_type = ct.as_str().to_owned();
                        }
                        if let Some(ce) = d.properties.content_encoding() {
                            m.content_encoding = ce.as_str().to_owned();
                        }
                        if !sink.deliver(decode_event_message(&m, &limits)) {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(url = %url, error = %e, "amqp event consumer failed");
                        sink.fail(
                            BrokerError::connection(format!("amqp event consumer lost ({url})"))
                                .with_source(e),
                        );
                        return;
                    }
                    None => {
                        tracing::warn!(url = %url, "amqp event consumer ended");
                        sink.fail(BrokerError::connection(format!(
                            "amqp event consumer ended ({url})"
                        )));
                        return;
                    }
                }
            }
            let _ = conn.close(200, ShortString::from("bye")).await;
        }));
        if let Some(every) = opts.enable_events_every {
            let url = self.url.clone();
            let name = self.name.clone();
            stream.attach(tokio::spawn(async move {
                let Ok(me) = AmqpBroker::connect(
                    &url,
                    AmqpOptions {
                        connection_name: name.map(|n| format!("{n}-enable-events")),
                    },
                )
                .await
                else {
                    return;
                };
                loop {
                    let o = BroadcastOptions {
                        reply: false,
                        ..BroadcastOptions::default()
                    };
                    if let Err(e) = me.broadcast(&ControlRequest::enable_events(), &o).await {
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
        let ch = self.channel().await?;
        // task_create_missing_queues: declare the queue as Celery does.
        self.declare_queue(&ch, &amqp_task_queue(queue)).await?;
        if message.properties.correlation_id.is_none() {
            message.properties.correlation_id = message.header_str("id").map(str::to_owned);
        }
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.err("confirm.select", e))?;
        ch.basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            BasicPublishOptions::default(),
            &message.body,
            properties_of(&message),
        )
        .await
        .map_err(|e| self.err("basic.publish", e))?
        .await
        .map_err(|e| self.err("basic.publish", e))?;
        let _ = ch.close(200, ShortString::from("bye")).await;
        Ok(())
    }

    async fn broadcast(
        &self,
        request: &ControlRequest,
        opts: &BroadcastOptions,
    ) -> BrokerResult<Vec<WorkerReply>> {
        let ch = self.channel().await?;
        if !opts.reply {
            let request = prepare_request(request, None, CONTROL_EXCHANGE);
            let r = self.publish_control(&ch, &request, opts.timeout).await;
            let _ = ch.close(200, ShortString::from("bye")).await;
            return r.map(|()| Vec::new());
        }
        let oid = uuid::Uuid::new_v4().to_string();
        let request = prepare_request(request, Some(&oid), CONTROL_EXCHANGE);
        let ticket = request.ticket.clone().unwrap_or_default();
        let reply_ex = amqp_reply_exchange(CONTROL_EXCHANGE);
        let reply_q = amqp_reply_queue(&oid, CONTROL_EXCHANGE);
        // Reply path first, then the request (README 4b).
        self.declare_exchange(&ch, &reply_ex).await?;
        self.declare_queue(&ch, &reply_q).await?;
        ch.queue_bind(
            ShortString::from(reply_q.name.as_str()),
            ShortString::from(reply_ex.name.as_str()),
            ShortString::from(oid.as_str()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| self.err("queue.bind", e))?;
        let mut consumer = ch
            .basic_consume(
                ShortString::from(reply_q.name.as_str()),
                ShortString::from(""),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.err("basic.consume", e))?;
        self.publish_control(&ch, &request, opts.timeout).await?;
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
            match tokio::time::timeout(left, consumer.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => return Err(self.err("reply consume", e)),
                Ok(Some(Ok(d))) => {
                    let m = message_from_delivery(&d.properties, d.data, "", "");
                    crate::api::push_replies(&m, &ticket, &mut replies);
                }
            }
        }
        let _ = ch.close(200, ShortString::from("bye")).await;
        Ok(replies)
    }

    async fn queue_depth(&self, queue: &str) -> BrokerResult<QueueDepth> {
        // Passive declare on a throw-away channel: a 404 closes it.
        let ch = self.channel().await?;
        let q = ch
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.err("queue.declare passive", e))?;
        let _ = ch.close(200, ShortString::from("bye")).await;
        Ok(QueueDepth {
            queue: queue.to_owned(),
            messages: u64::from(q.message_count()),
            by_priority: None,
            consumers: Some(u64::from(q.consumer_count())),
        })
    }

    async fn discover_queues(&self) -> BrokerResult<Vec<String>> {
        // AMQP 0-9-1 has no way to list queues; the management API does,
        // but it is a separate service. Workers' active_queues fill the gap.
        Ok(Vec::new())
    }

    async fn purge(&self, queue: &str, filter: &PurgeFilter) -> BrokerResult<u64> {
        let ch = self.channel().await?;
        if filter.header().is_none() {
            let n = ch
                .queue_purge(ShortString::from(queue), QueuePurgeOptions::default())
                .await
                .map_err(|e| self.err("queue.purge", e))?;
            let _ = ch.close(200, ShortString::from("bye")).await;
            return Ok(u64::from(n));
        }
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.err("confirm.select", e))?;
        // 1. Take every ready message, unacked (requeued by RabbitMQ if we die).
        let mut taken = Vec::new();
        while let Some(got) = ch
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| self.err("basic.get", e))?
        {
            taken.push(got.delivery);
        }
        // 2. Republish the ones we keep, in their order, with their
        //    properties and typed headers untouched.
        let mut removed = 0u64;
        let mut confirms = Vec::new();
        for d in &taken {
            let m = message_from_delivery(
                &d.properties,
                Vec::new(),
                d.exchange.as_str(),
                d.routing_key.as_str(),
            );
            if filter.matches(&m) {
                removed += 1;
                continue;
            }
            let c = ch
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(queue),
                    BasicPublishOptions::default(),
                    &d.data,
                    d.properties.clone(),
                )
                .await
                .map_err(|e| self.err("basic.publish", e))?;
            confirms.push(c);
        }
        for c in confirms {
            c.await.map_err(|e| self.err("publish confirm", e))?;
        }
        // 3. Only now drop the originals.
        if let Some(last) = taken.last() {
            ch.basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| self.err("basic.ack", e))?;
        }
        let _ = ch.close(200, ShortString::from("bye")).await;
        Ok(removed)
    }

    async fn healthcheck(&self) -> BrokerResult<()> {
        let ch = self.channel().await?;
        let _ = ch.close(200, ShortString::from("bye")).await;
        Ok(())
    }
}
