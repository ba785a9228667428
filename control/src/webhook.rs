//! Outgoing webhooks for decisions and approval gates.
//!
//! Why this exists: a gate is useless if nobody hears that it is waiting,
//! and a rollback should reach the channel the team watches. Each event is a
//! JSON object with a Slack-compatible `text` field plus structured fields.
//! Delivery must never hold up the state machine: events go into a bounded
//! queue ([`Webhooks::send`] never waits; a full queue drops the event and
//! counts it), and a background task posts each one to each URL with a
//! per-attempt timeout and a bounded number of retries with backoff.

use crate::client::HttpClient;
use crate::log;
use crate::machine::{Decision, DecisionKind};
use crate::metrics::Metrics;
use crate::spec::CanarySpec;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Events waiting for delivery at most.
pub const QUEUE: usize = 1024;
/// Deliveries in flight at most.
pub const IN_FLIGHT: usize = 16;

/// Delivery settings.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry (doubles each time).
    pub backoff: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// The payload of a decision event (pure).
pub fn payload(spec: &CanarySpec, d: &Decision) -> Value {
    let action = match d.kind {
        DecisionKind::AwaitApproval => format!(
            " Approve with `vigil-control canary approve {}` (or reject with `canary reject {}`).",
            spec.name, spec.name
        ),
        _ => String::new(),
    };
    json!({
        "text": format!(
            "[vigil] canary {}: {} ({} → {}, weight {}% → {}%). {}{}",
            spec.name, d.kind.as_str(), d.from.as_str(), d.to.as_str(),
            d.weight_before, d.weight_after, d.explanation, action
        ),
        "canary": spec.name,
        "kind": d.kind.as_str(),
        "actor": d.actor,
        "from": d.from.as_str(),
        "to": d.to.as_str(),
        "weight_before": d.weight_before,
        "weight_after": d.weight_after,
        "mode": spec.mode.as_str(),
        "explanation": d.explanation,
        "at_ms": d.at_ms,
    })
}

struct Event {
    urls: Vec<String>,
    body: Bytes,
}

/// Handle to the delivery task.
#[derive(Clone, Debug)]
pub struct Webhooks {
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event").field("urls", &self.urls).finish()
    }
}

impl Webhooks {
    /// Start the delivery task on the current tokio runtime.
    pub fn start(delivery: Delivery, metrics: Arc<Metrics>) -> Webhooks {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let task_metrics = metrics.clone();
        tokio::spawn(async move {
            let client = HttpClient::new();
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            while let Some(event) = rx.recv().await {
                for url in event.urls {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let (client, body, metrics) =
                        (client.clone(), event.body.clone(), task_metrics.clone());
                    tokio::spawn(async move {
                        deliver(&client, &url, body, delivery, &metrics).await;
                        drop(permit);
                    });
                }
            }
        });
        Webhooks { tx, metrics }
    }

    /// Queue an event for `urls`; never waits.
    pub fn send(&self, urls: Vec<String>, payload: &Value) {
        if urls.is_empty() {
            return;
        }
        let event = Event {
            urls,
            body: Bytes::from(payload.to_string()),
        };
        if self.tx.try_send(event).is_err() {
            Metrics::add(&self.metrics.webhooks_dropped, 1);
            log::warn("webhook queue full, event dropped", Value::Null);
        }
    }
}

async fn deliver(client: &HttpClient, url: &str, body: Bytes, d: Delivery, metrics: &Metrics) {
    let mut wait = d.backoff;
    for attempt in 0..=d.retries {
        let result = client
            .request(
                hyper::Method::POST,
                url,
                &[("content-type", "application/json")],
                Some(body.clone()),
                d.timeout,
            )
            .await;
        let error = match result {
            Ok(r) if (200..300).contains(&r.status) => {
                Metrics::add(&metrics.webhooks_sent, 1);
                return;
            }
            Ok(r) => format!("status {}", r.status),
            Err(e) => e,
        };
        if attempt == d.retries {
            Metrics::add(&metrics.webhooks_failed, 1);
            log::warn(
                "webhook delivery failed",
                json!({"url": redact(url), "attempts": attempt + 1, "error": error}),
            );
            return;
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
    }
}

/// Scheme and authority only: webhook paths often carry secrets (Slack).
pub fn redact(url: &str) -> String {
    crate::egress::redact(url)
}
