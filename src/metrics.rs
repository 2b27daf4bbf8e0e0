//! Counts what the gateway does, for `GET /metrics` in the Prometheus (OpenMetrics) text format.
//!
//! Every label has a small, fixed set of values (route templates, modes, problem codes, upstream
//! endpoints, status codes): no mailbox id, address, item id or secret ever becomes a label, so the
//! number of series stays bounded whatever clients send.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabels {
    operation: &'static str,
    /// `ok`, or the problem code.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImportLabels {
    mode: &'static str,
    /// `ok`, or the problem code.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The route template (`/v1/mailboxes/{mailbox}/...`), or `unmatched`.
    route: String,
    /// One of [`method_label`]'s fixed values: a client may send any method name.
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    endpoint: &'static str,
    /// The HTTP status, or `error` when no answer came.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Every metric of the gateway, registered under the `mailbox_gateway_` prefix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    imports: Family<ImportLabels, Counter>,
    item_bytes: Family<ImportLabels, Counter>,
    item_size: Histogram,
    http_duration: Family<HttpLabels, Histogram>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    token_requests: Family<ResultLabels, Counter>,
    sessions_created: Counter,
    queue_wait: Histogram,
    export_batch: Histogram,
    exported: Family<ExportLabels, Counter>,
    in_flight_requests: Gauge,
    in_flight_bytes: Gauge,
    shared_state_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("mailbox_gateway");
        let metrics = Metrics {
            registry: Registry::default(),
            imports: Family::default(),
            item_bytes: Family::default(),
            // 1 KiB to 256 MiB.
            item_size: Histogram::new(exponential_buckets(1024.0, 4.0, 10)),
            http_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 16))
            }),
            upstream_requests: Family::default(),
            retries: Family::default(),
            token_requests: Family::default(),
            sessions_created: Counter::default(),
            queue_wait: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            // 1 to 32 ids.
            export_batch: Histogram::new(exponential_buckets(1.0, 2.0, 6)),
            exported: Family::default(),
            in_flight_requests: Gauge::default(),
            in_flight_bytes: Gauge::default(),
            shared_state_up: Gauge::default(),
        };
        registry.register(
            "items_imported",
            "Items imported, by mode and outcome",
            metrics.imports.clone(),
        );
        registry.register(
            "item_bytes",
            "Raw item bytes received for import, by mode and outcome",
            metrics.item_bytes.clone(),
        );
        registry.register(
            "item_size_bytes",
            "Size of raw items received for import",
            metrics.item_size.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer client requests, by route, method and status",
            metrics.http_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests to Entra ID, Graph and importItem, by endpoint and status",
            metrics.upstream_requests.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream calls tried again, by reason",
            metrics.retries.clone(),
        );
        registry.register(
            "token_requests",
            "Token requests to Entra ID, by result: ok and error for the app's own token, obo_ok and obo_error for on-behalf-of exchanges",
            metrics.token_requests.clone(),
        );
        registry.register(
            "import_sessions_created",
            "Import sessions created",
            metrics.sessions_created.clone(),
        );
        registry.register(
            "mailbox_queue_wait_seconds",
            "Time requests waited for their mailbox's turn",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "export_batch_ids",
            "Item ids per exportItems call made for single-item reads",
            metrics.export_batch.clone(),
        );
        registry.register(
            "items_read",
            "Items and folders read or deleted by clients, by operation and outcome",
            metrics.exported.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Client requests being handled",
            metrics.in_flight_requests.clone(),
        );
        registry.register(
            "item_bytes_in_flight",
            "Raw item bytes held by imports under way",
            metrics.in_flight_bytes.clone(),
        );
        registry.register(
            "shared_state_up",
            "1 while the shared store (Valkey/Redis) answers, or when state is kept in memory; 0 while it does not",
            metrics.shared_state_up.clone(),
        );
        metrics.shared_state_up.set(1);
        Metrics {
            registry: root,
            ..metrics
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// An import finished with `outcome` (`ok` or a problem code).
    pub fn import_finished(&self, mode: &'static str, outcome: &'static str, bytes: usize) {
        let labels = ImportLabels { mode, outcome };
        self.imports.get_or_create(&labels).inc();
        self.item_bytes.get_or_create(&labels).inc_by(bytes as u64);
        self.item_size.observe(bytes as f64);
    }

    /// A client request was answered.
    pub fn http_answered(&self, route: &str, method: &http::Method, status: u16, took: Duration) {
        self.http_duration
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// An upstream request got `status`, or no answer (`None`).
    pub fn upstream(&self, endpoint: &'static str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.upstream_requests
            .get_or_create(&UpstreamLabels { endpoint, status })
            .inc();
    }

    /// Whether the shared store answers.
    pub fn shared_state_up(&self, up: bool) {
        self.shared_state_up.set(i64::from(up));
    }

    /// An upstream call is tried again for `reason`.
    pub fn retry(&self, reason: &'static str) {
        self.retries.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// An app token request ended (`ok` or `error`).
    pub fn token_request(&self, result: &'static str) {
        self.token_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// An import session was created.
    pub fn session_created(&self) {
        self.sessions_created.inc();
    }

    /// A request waited `waited` for its mailbox's turn.
    pub fn queue_waited(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// An exportItems call for single-item reads carried `ids` ids.
    pub fn export_batch(&self, ids: usize) {
        self.export_batch.observe(ids as f64);
    }

    /// A read or delete finished: `operation` is one of get, list, export, export_items, delete.
    pub fn item_read(&self, operation: &'static str, outcome: &'static str) {
        self.exported
            .get_or_create(&ExportLabels { operation, outcome })
            .inc();
    }

    /// Counts a client request in flight until the guard is dropped.
    pub fn request_in_flight(&self) -> InFlight<'_> {
        self.in_flight_requests.inc();
        InFlight {
            gauge: &self.in_flight_requests,
            by: 1,
        }
    }

    /// Counts `bytes` of item in flight until the guard is dropped.
    pub fn bytes_in_flight(&self, bytes: usize) -> InFlight<'_> {
        let by = bytes as i64;
        self.in_flight_bytes.inc_by(by);
        InFlight {
            gauge: &self.in_flight_bytes,
            by,
        }
    }
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    gauge: &'a Gauge,
    by: i64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.dec_by(self.by);
    }
}

/// A request method as a metrics label: the methods the API knows by name, everything else `other`, so
/// that made-up methods cannot add series.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prefixed_and_counted() {
        let metrics = Metrics::new();
        metrics.import_finished("create", "ok", 2048);
        metrics.upstream("import", Some(200));
        {
            let _request = metrics.request_in_flight();
            assert!(metrics
                .encode()
                .contains("mailbox_gateway_requests_in_flight 1"));
        }
        let text = metrics.encode();
        assert!(
            text.contains("mailbox_gateway_items_imported_total{mode=\"create\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailbox_gateway_item_bytes_total{mode=\"create\",outcome=\"ok\"} 2048")
        );
        assert!(text.contains(
            "mailbox_gateway_upstream_requests_total{endpoint=\"import\",status=\"200\"} 1"
        ));
        assert!(text.contains("mailbox_gateway_requests_in_flight 0"));
    }
}
