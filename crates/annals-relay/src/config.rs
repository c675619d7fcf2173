//! A relay's declaration: the `[[relay]]` tables of a TOML file, parsed and checked into
//! [`RelayDefinition`]s. Every mistake is reported with the relay's name and the field, and
//! nothing of a file with a mistake is applied.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use annals_core::{Source, SourceSpec};
use serde::Deserialize;

use crate::error::RelayError;
use crate::template::Template;

/// Most relays one server runs.
pub const RELAYS_MAX: usize = 64;
/// Most sends one relay keeps in flight.
pub const CONCURRENCY_MAX: usize = 1_024;
/// Longest a definition file may be.
pub const RELAY_FILE_BYTES_MAX: usize = 256 * 1024;

/// In what order a relay's events reach the broker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Order {
    /// Each stream's events in revision order; streams in parallel up to `concurrency`.
    Stream,
    /// Every event in `$all` order: one send in flight at a time.
    Global,
}

/// What a relay does with an event the broker will not take.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnPoison {
    /// Park it (listed, re-sent on request) and go on.
    Park,
    /// Halt the relay at it, so no later event of any stream overtakes it.
    Stop,
}

/// Retries: an event the broker refuses is tried `attempts` times in all, with exponential
/// backoff and jitter between `backoff` and `backoff_max`; then it is poison. While the broker
/// cannot be reached at all, sends are retried for ever with the same backoff.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 10,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// A NATS JetStream sink.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NatsSink {
    /// The servers of one deployment, or independent ones, tried in order.
    pub urls: Vec<String>,
    pub subject: Template,
    /// The JetStream stream that captures the subjects.
    pub stream: String,
    /// Create `stream` when it does not exist (else the relay says so and waits).
    pub create: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    /// Longest to wait for JetStream's acknowledgement of one publish.
    pub ack_timeout: Duration,
}

/// A RabbitMQ (AMQP 0-9-1) sink.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AmqpSink {
    pub urls: Vec<String>,
    pub exchange: String,
    pub routing_key: Template,
    /// Declare `exchange` (durable, topic) when it does not exist.
    pub create: bool,
    pub confirm_timeout: Duration,
}

/// A webhook sink: one POST per event.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WebhookSink {
    pub url: String,
    pub timeout: Duration,
    /// Extra request headers (credentials, say); never shown in status or logs.
    pub headers: BTreeMap<String, String>,
}

/// Where a relay sends.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SinkDefinition {
    Nats(NatsSink),
    Amqp(AmqpSink),
    Webhook(WebhookSink),
}

impl SinkDefinition {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkDefinition::Nats(_) => "nats",
            SinkDefinition::Amqp(_) => "amqp",
            SinkDefinition::Webhook(_) => "webhook",
        }
    }
}

/// One relay, checked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RelayDefinition {
    /// `[a-z0-9][a-z0-9_-]*`, at most 64 bytes: it names the relay's streams.
    pub name: String,
    pub source: Source,
    pub sink: SinkDefinition,
    pub concurrency: usize,
    pub order: Order,
    pub retry: RetryPolicy,
    pub on_poison: OnPoison,
    /// The declaration as written, to tell a changed definition from the same one applied again.
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    relay: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    name: String,
    source: SourceSpec,
    sink: toml::Value,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    on_error: Option<RawRetry>,
    #[serde(default)]
    on_poison: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default)]
    backoff_ms: Option<u64>,
    #[serde(default)]
    backoff_max_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNats {
    kind: String,
    urls: Vec<String>,
    subject: String,
    stream: String,
    #[serde(default)]
    create: bool,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    credentials_file: Option<PathBuf>,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    ack_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmqp {
    kind: String,
    urls: Vec<String>,
    exchange: String,
    routing_key: String,
    #[serde(default)]
    create: bool,
    #[serde(default)]
    confirm_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    kind: String,
    url: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Default wait for a broker's acknowledgement of one send.
const ACK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default concurrency: sends in flight.
const CONCURRENCY_DEFAULT: usize = 64;

/// Parses every `[[relay]]` of `text`.
pub fn parse_definitions(text: &str) -> Result<Vec<RelayDefinition>, RelayError> {
    if text.len() > RELAY_FILE_BYTES_MAX {
        return Err(RelayError::Definition(format!(
            "the definition text is {} bytes; at most {RELAY_FILE_BYTES_MAX}",
            text.len()
        )));
    }
    let file: RawFile = toml::from_str(text)
        .map_err(|e| RelayError::Definition(format!("not a relay file: {e}")))?;
    if file.relay.len() > RELAYS_MAX {
        return Err(RelayError::Definition(format!(
            "{} relays; at most {RELAYS_MAX}",
            file.relay.len()
        )));
    }
    let mut out: Vec<RelayDefinition> = Vec::with_capacity(file.relay.len());
    for value in file.relay {
        // The relay alone as a file of its own, so stored texts can be joined and parsed back.
        let mut one = toml::Table::new();
        one.insert("relay".to_owned(), toml::Value::Array(vec![value.clone()]));
        let text = toml::to_string(&one).unwrap_or_default();
        let name_hint = value
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let at = |field: &str, message: String| {
            RelayError::Definition(format!("relay {name_hint:?}, {field}: {message}"))
        };
        let raw: RawRelay = value
            .try_into()
            .map_err(|e: toml::de::Error| at("definition", e.message().to_owned()))?;
        check_name(&raw.name).map_err(|m| at("name", m))?;
        if out.iter().any(|d| d.name == raw.name) {
            return Err(at("name", "defined twice".to_owned()));
        }
        let source = Source::from_spec(&raw.source).map_err(|m| at("source", m))?;
        let sink = parse_sink(raw.sink).map_err(|m| at("sink", m))?;
        let concurrency = raw.concurrency.unwrap_or(CONCURRENCY_DEFAULT);
        if !(1..=CONCURRENCY_MAX).contains(&concurrency) {
            return Err(at(
                "concurrency",
                format!("{concurrency} is not between 1 and {CONCURRENCY_MAX}"),
            ));
        }
        let order = match raw.order.as_deref() {
            None | Some("stream") => Order::Stream,
            Some("global") => Order::Global,
            Some(other) => {
                return Err(at("order", format!("`{other}` is not stream or global")));
            }
        };
        let on_poison = match raw.on_poison.as_deref() {
            None | Some("park") => OnPoison::Park,
            Some("stop") => OnPoison::Stop,
            Some(other) => {
                return Err(at("on_poison", format!("`{other}` is not park or stop")));
            }
        };
        let defaults = RetryPolicy::default();
        let retry = match raw.on_error {
            None => defaults,
            Some(r) => RetryPolicy {
                attempts: r.attempts.unwrap_or(defaults.attempts),
                backoff: r.backoff_ms.map_or(defaults.backoff, Duration::from_millis),
                backoff_max: r
                    .backoff_max_ms
                    .map_or(defaults.backoff_max, Duration::from_millis),
            },
        };
        if retry.attempts == 0 {
            return Err(at("on_error.attempts", "must be at least 1".to_owned()));
        }
        if retry.backoff.is_zero() || retry.backoff_max < retry.backoff {
            return Err(at(
                "on_error",
                "backoff_ms must be at least 1 and at most backoff_max_ms".to_owned(),
            ));
        }
        out.push(RelayDefinition {
            name: raw.name,
            source,
            sink,
            concurrency,
            order,
            retry,
            on_poison,
            text,
        });
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1-64 of a-z, 0-9, `_` and `-`, starting with a letter or digit"
        ))
    }
}

fn urls(list: Vec<String>, schemes: &[&str]) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("urls must not be empty".to_owned());
    }
    for url in &list {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(format!(
                "`{}` is not one of {}",
                crate::redact::url(url),
                schemes.join(", ")
            ));
        }
    }
    Ok(list)
}

fn parse_sink(value: toml::Value) -> Result<SinkDefinition, String> {
    let kind = value
        .get("kind")
        .and_then(toml::Value::as_str)
        .ok_or("needs a kind: nats, amqp or webhook")?
        .to_owned();
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    match kind.as_str() {
        "nats" => {
            let raw: RawNats = value
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_owned())?;
            debug_assert_eq!(raw.kind, "nats");
            if raw.stream.is_empty() || raw.stream.contains(['.', '*', '>', ' ']) {
                return Err(format!("`{}` is not a JetStream stream name", raw.stream));
            }
            Ok(SinkDefinition::Nats(NatsSink {
                urls: urls(raw.urls, &["nats", "tls"])?,
                subject: Template::parse(&raw.subject, crate::template::Escape::NatsSubject)?,
                stream: raw.stream,
                create: raw.create,
                user: raw.user,
                password: raw.password,
                token: raw.token,
                credentials_file: raw.credentials_file,
                tls_ca_file: raw.tls_ca_file,
                ack_timeout: ms(raw.ack_timeout_ms, ACK_TIMEOUT_DEFAULT),
            }))
        }
        "amqp" => {
            let raw: RawAmqp = value
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_owned())?;
            debug_assert_eq!(raw.kind, "amqp");
            Ok(SinkDefinition::Amqp(AmqpSink {
                urls: urls(raw.urls, &["amqp", "amqps"])?,
                exchange: raw.exchange,
                routing_key: Template::parse(&raw.routing_key, crate::template::Escape::AmqpKey)?,
                create: raw.create,
                confirm_timeout: ms(raw.confirm_timeout_ms, ACK_TIMEOUT_DEFAULT),
            }))
        }
        "webhook" => {
            let raw: RawWebhook = value
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_owned())?;
            debug_assert_eq!(raw.kind, "webhook");
            let url = urls(vec![raw.url], &["http", "https"])?
                .pop()
                .ok_or("no url")?;
            for name in raw.headers.keys() {
                reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a header name"))?;
            }
            Ok(SinkDefinition::Webhook(WebhookSink {
                url,
                timeout: ms(raw.timeout_ms, ACK_TIMEOUT_DEFAULT),
                headers: raw.headers,
            }))
        }
        other => Err(format!("kind `{other}` is not nats, amqp or webhook")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_definition_parses() {
        let text = r#"
            [[relay]]
            name = "orders-out"
            source = { category = "order" }
            sink = { kind = "nats", urls = ["nats://127.0.0.1:4222"], subject = "events.{category}.{event_type}", stream = "EVENTS" }
            concurrency = 8
            order = "global"
            on_error = { attempts = 3, backoff_ms = 10, backoff_max_ms = 1000 }
            on_poison = "stop"
        "#;
        let defs = parse_definitions(text).unwrap();
        assert_eq!(defs.len(), 1);
        let d = &defs[0];
        assert_eq!(d.name, "orders-out");
        assert_eq!(d.source, Source::Category("order".to_owned()));
        assert_eq!(d.concurrency, 8);
        assert_eq!(d.order, Order::Global);
        assert_eq!(d.on_poison, OnPoison::Stop);
        assert_eq!(d.retry.attempts, 3);
        assert!(matches!(&d.sink, SinkDefinition::Nats(n) if n.stream == "EVENTS"));
    }

    #[test]
    fn mistakes_name_the_relay_and_the_field() {
        let cases = [
            (
                r#"name = "Bad"
                source = { category = "x" }
                sink = { kind = "webhook", url = "http://x" }"#,
                "name",
            ),
            (
                r#"name = "a"
                source = { category = "x" }
                sink = { kind = "kafka" }"#,
                "kafka",
            ),
            (
                r#"name = "a"
                source = { category = "x" }
                sink = { kind = "webhook", url = "ftp://x" }"#,
                "not one of",
            ),
            (
                r#"name = "a"
                source = { category = "x" }
                sink = { kind = "webhook", url = "http://x" }
                concurrency = 0"#,
                "concurrency",
            ),
            (
                r#"name = "a"
                source = { category = "x" }
                sink = { kind = "nats", urls = ["nats://x"], subject = "a.{nope}", stream = "S" }"#,
                "nope",
            ),
            (
                r#"name = "a"
                source = { category = "x" }
                sink = { kind = "webhook", url = "http://x", extra = 1 }"#,
                "extra",
            ),
        ];
        for (body, expect) in cases {
            let text = format!("[[relay]]\n{body}\n");
            let err = parse_definitions(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{body}: {err}");
        }
    }
}
