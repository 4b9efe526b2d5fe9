//! API request counters and latency histograms per method and status code, collected for the
//! daemon's `/metrics`.
//!
//! A tower layer in front of every service records each call when its response headers are
//! ready: for unary calls that is the whole call; for streams, the time to open the stream.
//! The code is the `grpc-status` of a trailers-only response (how tonic sends every error a
//! handler returns); a response with a body counts as OK. Methods outside `mecgw.v1`, health
//! and reflection are counted under one label, so clients cannot grow the label set.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};
use tonic::Code;

use crate::openmetrics;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    10.0,
];

/// Label for paths that are not one of the served methods.
const OTHER_METHOD: &str = "other";

#[derive(Debug, Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    /// Calls at or below each bound of [`BUCKETS`] (not cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
}

/// Calls by (method, code).
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// Keyed by method label and gRPC status code number.
    series: Mutex<BTreeMap<(String, i32), Series>>,
}

fn method_label(path: &str) -> &str {
    let known = ["/mecgw.v1.", "/grpc.health.v1.", "/grpc.reflection."];
    let shape_ok = path.len() <= 128 && path.bytes().filter(|&b| b == b'/').count() == 2;
    if shape_ok && known.iter().any(|k| path.starts_with(k)) {
        path
    } else {
        OTHER_METHOD
    }
}

impl ApiMetrics {
    /// Counts one call of `path` that ended with `code` after `took`.
    pub fn record(&self, path: &str, code: Code, took: Duration) {
        let secs = took.as_secs_f64();
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let s = series
            .entry((method_label(path).to_string(), code as i32))
            .or_default();
        s.count += 1;
        s.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            s.buckets[i] += 1;
        }
    }

    /// Calls counted so far for `path` with `code`.
    pub fn calls(&self, path: &str, code: Code) -> u64 {
        self.series
            .lock()
            .ok()
            .and_then(|s| s.get(&(path.to_string(), code as i32)).map(|s| s.count))
            .unwrap_or(0)
    }

    /// These metrics alone, as an OpenMetrics document (the daemon registers them with the
    /// rest of `/metrics`).
    pub fn render(self: &Arc<Self>) -> String {
        openmetrics::encode_collector(Arc::clone(self))
    }
}

impl Collector for ApiMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let series = match self.series.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        // The code's name (`Ok`, `PermissionDenied`), as dashboards know it.
        let codes: Vec<String> = series
            .keys()
            .map(|(_, code)| format!("{:?}", Code::from_i32(*code)))
            .collect();
        let labelled: Vec<([(&str, &str); 2], &Series)> = series
            .iter()
            .zip(&codes)
            .map(|(((method, _), s), code)| {
                ([("method", method.as_str()), ("code", code.as_str())], s)
            })
            .collect();
        openmetrics::counters(
            &mut e,
            "mecgw_api_requests_total",
            "gRPC API calls by method and status code.",
            labelled.iter().map(|(l, s)| (*l, s.count)),
        )?;
        let mut m = e.encode_descriptor(
            "mecgw_api_request_duration_seconds",
            "gRPC API call latency (unary: whole call; streams: until the stream opens).",
            None,
            MetricType::Histogram,
        )?;
        for (labels, s) in &labelled {
            // Per bucket, not cumulative: the encoder sums them. The last one is +Inf.
            let within: u64 = s.buckets.iter().sum();
            let buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .copied()
                .zip(s.buckets)
                .chain([(f64::INFINITY, s.count.saturating_sub(within))])
                .collect();
            m.encode_family(labels)?
                .encode_histogram::<NoLabelSet>(s.sum, s.count, &buckets, None)?;
        }
        Ok(())
    }
}

/// The tower layer that records every call into [`ApiMetrics`].
#[derive(Clone)]
pub(crate) struct MetricsLayer(pub(crate) Arc<ApiMetrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Arc<ApiMetrics>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let start = Instant::now();
        let metrics = self.metrics.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from_i32),
                Err(_) => Code::Unknown,
            };
            metrics.record(&path, code, start.elapsed());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_unknown_paths_share_one_label() {
        let m = Arc::new(ApiMetrics::default());
        let get = "/mecgw.v1.TrafficRulesService/GetTrafficRule";
        m.record(get, Code::Ok, Duration::from_micros(40));
        m.record(get, Code::Ok, Duration::from_millis(3));
        m.record(get, Code::PermissionDenied, Duration::from_micros(70));
        m.record("/evil/../x", Code::Unimplemented, Duration::from_micros(1));
        m.record("/a.b/c/d", Code::Unimplemented, Duration::from_micros(1));
        assert_eq!(m.calls(get, Code::Ok), 2);
        assert_eq!(m.calls("other", Code::Unimplemented), 2);
        let text = m.render();
        let ok = format!("method=\"{get}\",code=\"Ok\"");
        for line in [
            format!("mecgw_api_requests_total{{{ok}}} 2"),
            format!("mecgw_api_request_duration_seconds_bucket{{le=\"0.00005\",{ok}}} 1"),
            format!("mecgw_api_request_duration_seconds_bucket{{le=\"0.0025\",{ok}}} 1"),
            format!("mecgw_api_request_duration_seconds_bucket{{le=\"0.005\",{ok}}} 2"),
            format!("mecgw_api_request_duration_seconds_bucket{{le=\"+Inf\",{ok}}} 2"),
            format!("mecgw_api_request_duration_seconds_count{{{ok}}} 2"),
            format!("mecgw_api_requests_total{{method=\"{get}\",code=\"PermissionDenied\"}} 1"),
            "mecgw_api_requests_total{method=\"other\",code=\"Unimplemented\"} 2".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
