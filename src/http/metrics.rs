//! `GET /metrics`: the store's counters and gauges ([`Store::metrics`]) in
//! the Prometheus (OpenMetrics) text format, encoded by `prometheus-client`.
//!
//! They are store-wide, every user's work together: a user must not read
//! them (they would tell of other users' uploads). So they are not in
//! [`router`](super::router), which serves users, but in their own
//! [`metrics_router`], which `keepsake serve --metrics-listen` serves on
//! an address of its own (loopback, for the operator's scraper) and an
//! embedder mounts where only its operators reach.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{blocking, Problem};
use crate::store::Store;
use crate::Metrics;

/// `/metrics` (and `/healthz`) over `store`, without authentication: mount
/// it where only the operator reaches.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let store = keepsake::Store::open(dir.path()).unwrap();
/// let ops: axum::Router = keepsake::http::metrics_router(store);
/// # drop(ops);
/// ```
pub fn metrics_router(store: Store) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(store)
}

async fn metrics(State(store): State<Store>) -> Result<Response, Problem> {
    let m = blocking(move || Ok(store.metrics()?)).await?;
    let text = encode(&m).map_err(|_| {
        Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "the metrics could not be encoded",
        )
    })?;
    let kind = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    Ok(([(header::CONTENT_TYPE, kind)], text).into_response())
}

/// The commit-latency histogram, whose buckets the store counts itself.
#[derive(Debug)]
struct Histogram {
    sum: f64,
    count: u64,
    /// Per bucket, not cumulative (the encoder sums them), ending with +Inf.
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn encode(m: &Metrics) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("keepsake");
    let uploads = Family::<Vec<(&'static str, String)>, Counter>::default();
    let upload_bytes = Family::<Vec<(&'static str, String)>, Counter>::default();
    for (outcome, n, bytes) in &m.uploads {
        let labels = vec![("outcome", outcome.to_string())];
        uploads.get_or_create(&labels).inc_by(*n);
        upload_bytes.get_or_create(&labels).inc_by(*bytes);
    }
    reg.register("uploads", "Finished uploads, by outcome", uploads);
    reg.register_with_unit(
        "upload",
        "Bytes of finished uploads, by outcome (all but stored were deduplicated)",
        Unit::Bytes,
        upload_bytes,
    );
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register_with_unit(
        "written",
        "Blob bytes uploads wrote and synced",
        Unit::Bytes,
        counter(m.bytes_written),
    );
    reg.register_with_unit(
        "deduplicated",
        "Bytes of uploads whose content was not written",
        Unit::Bytes,
        counter(m.bytes_deduplicated()),
    );
    let mut previous = 0;
    let mut buckets: Vec<(f64, u64)> = m
        .commit_buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let n = cumulative - previous;
            previous = cumulative;
            (bound, n)
        })
        .collect();
    buckets.push((f64::INFINITY, m.commits - previous));
    reg.register_with_unit(
        "commit_duration",
        "Commits, from call to durable end",
        Unit::Seconds,
        Histogram {
            sum: m.commit_seconds,
            count: m.commits,
            buckets,
        },
    );
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    reg.register(
        "upload_sessions",
        "Resumable upload sessions open",
        gauge(m.open_sessions),
    );
    reg.register_with_unit(
        "staged",
        "Bytes the upload sessions hold staged",
        Unit::Bytes,
        gauge(m.staged_bytes),
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outcome;

    #[test]
    fn the_text_names_every_figure_with_cumulative_buckets_ending_in_inf() {
        let m = Metrics {
            uploads: vec![(Outcome::Stored, 2, 300), (Outcome::Skipped, 1, 100)],
            bytes_written: 300,
            commits: 3,
            commit_seconds: 0.5,
            commit_buckets: crate::COMMIT_BUCKETS
                .iter()
                .map(|&b| (b, u64::from(b >= 0.01) * 2))
                .collect(),
            open_sessions: 4,
            staged_bytes: 5,
        };
        let text = encode(&m).unwrap();
        for line in [
            "keepsake_uploads_total{outcome=\"stored\"} 2",
            "keepsake_uploads_total{outcome=\"skipped\"} 1",
            "keepsake_upload_bytes_total{outcome=\"stored\"} 300",
            "keepsake_written_bytes_total 300",
            "keepsake_deduplicated_bytes_total 100",
            "keepsake_commit_duration_seconds_count 3",
            "keepsake_commit_duration_seconds_bucket{le=\"0.005\"} 0",
            "keepsake_commit_duration_seconds_bucket{le=\"0.01\"} 2",
            "keepsake_commit_duration_seconds_bucket{le=\"+Inf\"} 3",
            "keepsake_upload_sessions 4",
            "keepsake_staged_bytes 5",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
