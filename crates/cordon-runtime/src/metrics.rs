//! Prometheus metrics of the runtime (`GET /metrics`, OpenMetrics text).
//!
//! Labels carry only what the operator already knows: model names from the configuration, the
//! channel a request came by, and outcome classes. Never request data, ids or keys: the metrics
//! endpoint is outside the encrypted channel.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt::Write as _;

/// How a request reached the runtime.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Channel {
    /// One-shot HPKE (`POST /v1/encrypted`).
    Oneshot,
    /// Session mode (`POST /v1/session/message`).
    Session,
    /// Plain HTTP, only with the development flag that turns encryption off.
    Plain,
}

/// Outcome classes of a request, by the OIP status it got.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The request was malformed or did not fit the model (4xx other than 404).
    BadRequest,
    NotFound,
    /// Refused by backpressure (503).
    Busy,
    /// The engine failed (5xx).
    Error,
}

impl Outcome {
    pub fn from_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Ok,
            404 => Outcome::NotFound,
            503 => Outcome::Busy,
            400..=499 => Outcome::BadRequest,
            _ => Outcome::Error,
        }
    }
}

/// Label values in Prometheus' snake case, from the variant names.
macro_rules! snake_label {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self { $(Self::$variant => $text),* })
            }
        }
    };
}

snake_label!(Channel { Oneshot => "oneshot", Session => "session", Plain => "plain" });
snake_label!(Outcome {
    Ok => "ok",
    BadRequest => "bad_request",
    NotFound => "not_found",
    Busy => "busy",
    Error => "error",
});

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub channel: Channel,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InferLabels {
    pub model: String,
    pub channel: Channel,
}

/// Refusals before a request reaches a model: the channel or session layer said no.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefusalKind {
    /// The encrypted message did not authenticate or parse.
    Decrypt,
    /// Unknown or expired session.
    Session,
    /// Replayed or reordered session message.
    Replay,
    /// Queue or session table full.
    Busy,
    /// Body over the size limit.
    TooLarge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

snake_label!(RefusalKind {
    Decrypt => "decrypt",
    Session => "session",
    Replay => "replay",
    Busy => "busy",
    TooLarge => "too_large",
});

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub kind: RefusalKind,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum KeyEvent {
    /// Evidence produced for a client's attestation request.
    Attestation,
    /// Evidence could not be produced.
    AttestationFailed,
    SessionOpened,
    SessionExpired,
}

snake_label!(KeyEvent {
    Attestation => "attestation",
    AttestationFailed => "attestation_failed",
    SessionOpened => "session_opened",
    SessionExpired => "session_expired",
});

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: KeyEvent,
}

/// Every metric the runtime exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub inference_seconds: Family<InferLabels, Histogram>,
    pub batch_rows: Family<InferLabels, Histogram>,
    pub batched_rows: Family<ModelLabels, Histogram>,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    pub sessions_open: Gauge,
    /// Identifiers held by the replay memories: one-shot requests and session setups
    /// (`channel`), and party-signed requests (`requests`).
    pub replay_remembered: Family<MemoryLabels, Gauge>,
    pub events: Family<EventLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct MemoryLabels {
    pub memory: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cordon_runtime");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests through the encrypted channel and the plain dev path, by outcome",
            requests.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused before reaching a model, by reason",
            refusals.clone(),
        );
        let inference_seconds = Family::<InferLabels, Histogram>::new_with_constructor(|| {
            // 10 µs to about 1.3 s.
            Histogram::new(exponential_buckets(1e-5, 2.0, 18))
        });
        registry.register(
            "inference_seconds",
            "Time from admission to the model's answer, per model and channel",
            inference_seconds.clone(),
        );
        let batch_rows = Family::<InferLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 12))
        });
        registry.register(
            "batch_rows",
            "Rows (first dimension) per model evaluation",
            batch_rows.clone(),
        );
        let batched_rows = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 12))
        });
        registry.register(
            "batched_rows",
            "Rows per evaluation of the dynamic batcher (requests merged), per model",
            batched_rows.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Admitted inference requests waiting for a worker",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Inference requests running on a worker",
            in_flight.clone(),
        );
        let sessions_open = Gauge::default();
        registry.register(
            "sessions_open",
            "Sessions in the session table",
            sessions_open.clone(),
        );
        let replay_remembered = Family::<MemoryLabels, Gauge>::default();
        registry.register(
            "replay_remembered",
            "Identifiers the replay memories hold (channel: one-shot requests and session setups; requests: party-signed requests)",
            replay_remembered.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Attestation and session key events",
            events.clone(),
        );
        Metrics {
            registry,
            requests,
            refusals,
            inference_seconds,
            batch_rows,
            batched_rows,
            queue_depth,
            in_flight,
            sessions_open,
            replay_remembered,
            events,
        }
    }

    pub fn request(&self, channel: Channel, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                channel,
                outcome: Outcome::from_status(status),
            })
            .inc();
    }

    pub fn refused(&self, kind: RefusalKind) {
        self.refusals.get_or_create(&RefusalLabels { kind }).inc();
    }

    pub fn event(&self, event: KeyEvent) {
        self.events.get_or_create(&EventLabels { event }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_labels() {
        let m = Metrics::new();
        m.request(Channel::Session, 200);
        m.request(Channel::Oneshot, 400);
        m.refused(RefusalKind::Replay);
        m.inference_seconds
            .get_or_create(&InferLabels {
                model: "lr".into(),
                channel: Channel::Session,
            })
            .observe(0.0002);
        m.queue_depth.set(3);
        let text = m.encode();
        assert!(text.contains(r#"cordon_runtime_requests_total{channel="session",outcome="ok"} 1"#));
        assert!(text.contains(r#"outcome="bad_request"} 1"#));
        assert!(text.contains(r#"cordon_runtime_refusals_total{kind="replay"} 1"#));
        assert!(text
            .contains(r#"cordon_runtime_inference_seconds_count{model="lr",channel="session"} 1"#));
        assert!(text.contains("cordon_runtime_queue_depth 3"));
        assert!(text.ends_with("# EOF\n"));
    }
}
