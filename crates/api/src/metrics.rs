//! The metrics: calls by route and status with their latency, recorded by the edge for every
//! call (the data plane included), and the operational counts read from core at each scrape.
//! Served as OpenMetrics text, which Prometheus reads.

use std::time::Duration;

use keyplane_core::service::OperationalView;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::operation::Routed;

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    /// The route template (`/api/v4/managed_keys/{id}`), never the path: ids would make a
    /// series per key.
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// What the edge records. One per process, shared by the API listener and the metrics
/// listener.
pub struct Metrics {
    /// Whether calls are recorded (`KEYPLANE_METRICS=off` records none; the operational
    /// counts are still served).
    recording: bool,
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: LatencyFamily,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(true)
    }
}

/// Half a millisecond to about 16 seconds, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

impl Metrics {
    pub fn new(recording: bool) -> Self {
        let mut registry = Registry::with_prefix("keyplane");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Calls answered, by method, route and status",
            calls.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a call's arrival to its answer, by method and route",
            Unit::Seconds,
            latency.clone(),
        );
        Self {
            recording,
            registry,
            calls,
            latency,
        }
    }

    /// Records one answered call of the operation `routed`.
    pub(crate) fn observe(
        &self,
        routed: &Routed,
        method: &axum::http::Method,
        status: u16,
        took: Duration,
    ) {
        if !self.recording {
            return;
        }
        let method = method_name(method);
        let route = if routed.is_known() {
            routed.template
        } else {
            UNMATCHED_ROUTE
        };
        let series = routed.series.get_or_init(|| RouteSeries {
            method,
            success_status: routed.success,
            success: self.calls.get_or_create_owned(&CallLabels {
                method,
                route,
                status: routed.success,
            }),
            latency: self
                .latency
                .get_or_create_owned(&RouteLabels { method, route }),
        });
        // The operation's own method and success: the series in hand.
        if series.method == method {
            if status == series.success_status {
                series.success.inc();
            } else {
                self.calls
                    .get_or_create(&CallLabels {
                        method,
                        route,
                        status,
                    })
                    .inc();
            }
            series.latency.observe(took.as_secs_f64());
            return;
        }
        self.calls
            .get_or_create(&CallLabels {
                method,
                route,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method, route })
            .observe(took.as_secs_f64());
    }

    /// The whole exposition: what the edge recorded, then the operational view.
    pub fn render(&self, view: &OperationalView) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        let _ = encode_registry(&mut text, &operational_registry(view));
        let _ = encode_eof(&mut text);
        text
    }
}

/// An operation's series for its own method, kept with the operation.
#[derive(Debug)]
pub(crate) struct RouteSeries {
    method: &'static str,
    success_status: u16,
    success: Counter,
    latency: Histogram,
}

/// The route label of calls that resolved to no operation (unknown paths, `/health`, `/ready`):
/// one series for all, whatever paths anyone sends.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Method names as static strings (the label holds no allocation); other methods are counted
/// together.
fn method_name(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    keystore: String,
    keystore_name: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeystoreLabels {
    keystore: String,
    keystore_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    keystore: String,
    keystore_name: String,
    r#type: String,
    health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    algorithm: String,
    size: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    state: &'static str,
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// A registry of gauges holding the view's values, built for one scrape.
fn operational_registry(view: &OperationalView) -> Registry {
    let mut r = Registry::with_prefix("keyplane");
    let counts = &view.counts;

    r.register(
        "sealed",
        "1 while this node is sealed (keys cannot be used), else 0",
        gauge(u64::from(view.sealed)),
    );

    let keys = Family::<StateLabel, Gauge>::default();
    for (state, n) in &counts.keys_by_state {
        keys.get_or_create(&StateLabel {
            state: state.clone(),
        })
        .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    r.register("managed_keys", "Managed keys by state", keys);
    r.register(
        "managed_keys_expiring",
        "Active keys whose expiration date is within 30 days or past",
        gauge(counts.keys_expiring),
    );

    let tasks = Family::<TaskLabels, Gauge>::default();
    let oldest = Family::<KeystoreLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for t in &counts.tasks {
        let keystore = t.keystore_id.to_string();
        tasks
            .get_or_create(&TaskLabels {
                keystore: keystore.clone(),
                keystore_name: t.keystore_name.clone(),
                state: t.state.clone(),
            })
            .set(i64::try_from(t.count).unwrap_or(i64::MAX));
        if t.state != "failed" {
            let age = (view.read_at - t.oldest).num_milliseconds().max(0) as f64 / 1000.0;
            let g = oldest.get_or_create(&KeystoreLabels {
                keystore,
                keystore_name: t.keystore_name.clone(),
            });
            if age > g.get() {
                g.set(age);
            }
        }
    }
    r.register(
        "distribution_tasks",
        "Distribution tasks per keystore: pending (queued), running (in flight), failed (given up; the most recent are kept)",
        tasks,
    );
    r.register_with_unit(
        "distribution_oldest_task_age",
        "Age of the oldest distribution task still pending or running, per keystore",
        Unit::Seconds,
        oldest,
    );

    let health = Family::<HealthLabels, Gauge>::default();
    for k in &view.keystores {
        health
            .get_or_create(&HealthLabels {
                keystore: k.id.to_string(),
                keystore_name: k.name.clone(),
                r#type: k.keystore_type.as_str().to_owned(),
                health: k.health.as_str().to_owned(),
            })
            .set(1);
    }
    r.register(
        "keystore_health",
        "External keystores as their last call from this node found them (1 on the health seen)",
        health,
    );

    r.register(
        "audit_events",
        "Events in the audit trail: the hash chain's length (its rate is the events written)",
        gauge(counts.audit_events),
    );

    let pool = Family::<PoolLabels, Gauge>::default();
    for (algorithm, size, n) in &counts.key_pool {
        pool.get_or_create(&PoolLabels {
            algorithm: algorithm.clone(),
            size: *size,
        })
        .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    r.register(
        "key_pool_depth",
        "Pregenerated keys waiting in the key pool",
        pool,
    );

    let connections = Family::<ConnectionLabels, Gauge>::default();
    let c = counts.connections;
    for (state, n) in [
        ("in_use", c.in_use),
        ("idle", c.open.saturating_sub(c.in_use)),
    ] {
        connections
            .get_or_create(&ConnectionLabels { state })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    r.register(
        "database_connections",
        "Database connections of this node's pool",
        connections,
    );
    r.register(
        "database_connections_max",
        "The most connections the pool keeps",
        gauge(c.max),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_bounded() {
        assert_eq!(method_name(&axum::http::Method::GET), "GET");
        let odd = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_name(&odd), "OTHER");
    }
}
