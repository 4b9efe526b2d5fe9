//! The plaintext operations port: `/metrics` (OpenMetrics text, written by
//! [`super::metrics`]), `/healthz`, `/readyz` and the status page.
//!
//! Kubelet probes cannot do mTLS, so this port carries no regulated data: only counters and
//! health. It is read-only.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::{Semaphore, oneshot};
use tracing::{debug, info, warn};

use super::Gateway;
use crate::log_limit::LogBudget;

/// Connections served at once, so that idle or slow clients cannot take every file
/// descriptor the daemon has. At the limit, a new connection closes the oldest one that is
/// not in the middle of a request (counted); only if every one is busy is the new one closed
/// at accept (counted too). So idle and slow-header clients cannot keep the probes out.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a new connection waits for the slot of the connection it closed.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The open connections, oldest first: whether each is serving a request, and how to close it.
#[derive(Default)]
struct Open {
    next: u64,
    conns: std::collections::BTreeMap<u64, (Arc<AtomicUsize>, oneshot::Sender<()>)>,
}

impl Open {
    fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
        // Plain bookkeeping: a panic elsewhere leaves nothing half-done here.
        open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the oldest connection with no request in progress; false if every one is busy.
    fn evict_oldest_idle(&mut self) -> bool {
        let idle = self
            .conns
            .iter()
            .find(|(_, (in_flight, _))| in_flight.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|id| self.conns.remove(&id)) {
            Some((_, close)) => {
                let _ = close.send(());
                true
            }
            None => false,
        }
    }
}

/// Counts a request in progress on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a client may take to send a request's headers (also the idle time allowed
/// between keep-alive requests before the next one's headers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let metrics_of = Arc::clone(&gw);
    let scrapes = Arc::new(Scrapes::default());
    let app = Router::new()
        .route("/", get(status_page))
        .route("/status.js", get(status_script))
        .route("/status.css", get(status_style))
        .route("/status.json", get(status_json))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/metrics",
            get(move |State(gw): State<Arc<Gateway>>| metrics(gw, Arc::clone(&scrapes))),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gw);
    let listen = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    info!(listen, "operations port: /metrics /healthz /readyz");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = Arc::new(Mutex::new(Open::default()));
    // Both warnings can come once per connection attempt: the shared log limit, not one
    // line each.
    let mut accept_log = LogBudget::new("operations port accept failures", 10);
    let mut limit_log = LogBudget::new("operations port connection limit", 10);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning on accept.
                    if accept_log.allow() {
                        warn!(error = %e, "operations port: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) if Open::lock(&open).evict_oldest_idle() => {
                metrics_of
                    .metrics
                    .ops_connections_evicted
                    .fetch_add(1, Ordering::Relaxed);
                if limit_log.allow() {
                    warn!(%peer, max = MAX_CONNECTIONS, "operations port: connection limit reached; the oldest idle connection is closed for a new one (mecgw_ops_connections_evicted_total)");
                }
                // The closed connection's task ends at once and gives its slot back.
                tokio::time::timeout(EVICTION_WAIT, Arc::clone(&slots).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(slot) = slot else {
            metrics_of
                .metrics
                .ops_connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if limit_log.allow() {
                warn!(%peer, max = MAX_CONNECTIONS, "operations port: connection limit reached and every connection is serving a request; this one is closed (mecgw_ops_connections_refused_total)");
            }
            continue;
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (close, closed) = oneshot::channel();
        let id = {
            let mut o = Open::lock(&open);
            let id = o.next;
            o.next += 1;
            o.conns.insert(id, (Arc::clone(&in_flight), close));
            id
        };
        let inner = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |request| {
            let busy = InFlight::enter(&in_flight);
            let response = hyper::service::Service::call(&inner, request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        debug!(%peer, error = %e, "operations port: connection ended");
                    }
                }
                // Closed for a newer connection: dropping it closes the socket.
                _ = closed => debug!(%peer, "operations port: idle connection closed for a new one"),
            }
            Open::lock(&open).conns.remove(&id);
        });
    }
}

/// The status page's files, embedded in the binary (no CDN, nothing fetched elsewhere).
const STATUS_HTML: &str = include_str!("status/index.html");
const STATUS_JS: &str = include_str!("status/status.js");
const STATUS_CSS: &str = include_str!("status/status.css");

/// Headers of every status-page answer: only this origin's scripts, styles and fetches, no
/// framing, no sniffing. The page is read-only and shows no regulated data.
fn page_headers(content_type: &'static str) -> [(http::header::HeaderName, &'static str); 5] {
    use http::header;
    [
        (header::CONTENT_TYPE, content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

async fn status_page() -> impl IntoResponse {
    (page_headers("text/html; charset=utf-8"), STATUS_HTML)
}

async fn status_script() -> impl IntoResponse {
    (page_headers("text/javascript; charset=utf-8"), STATUS_JS)
}

async fn status_style() -> impl IntoResponse {
    (page_headers("text/css; charset=utf-8"), STATUS_CSS)
}

/// What the status page shows besides numbers: which parts are configured, why not ready,
/// the policy hash and the audit head.
async fn status_json(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    let egress = gw.egress().cloned();
    let (egress_problems, audit_head) = match egress.clone() {
        Some(e) => {
            let problems: Vec<String> = e
                .health()
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.component, p.message))
                .collect();
            // A short file read: off the runtime.
            let head = tokio::task::spawn_blocking(move || e.audit_head())
                .await
                .ok()
                .flatten();
            (problems, head)
        }
        None => (Vec::new(), None),
    };
    let readyz = if !gw.is_ready() {
        "not ready".to_string()
    } else if let Some(problem) = egress_problems.first() {
        problem.clone()
    } else {
        "ready".to_string()
    };
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "datapath": gw.datapath_kind_name(),
        "ready": gw.is_ready(),
        "draining": gw.is_draining(),
        "readyz": readyz,
        "pfcp": gw.pfcp_metrics().is_some(),
        "egress": egress.is_some(),
        "egress_problems": egress_problems,
        "policy": gw.policy().map(|p| p.hash.to_string()),
        "audit_head": audit_head,
    });
    (page_headers("application/json"), body.to_string())
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if !gw.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
    }
    // Ready means every configured part serves: egress must be able to spool and audit.
    match gw.egress().map(|e| e.health()) {
        Some(h) if !h.is_ready() => (StatusCode::SERVICE_UNAVAILABLE, format!("{h}\n")),
        _ => (StatusCode::OK, "ready\n".to_string()),
    }
}

async fn metrics(gw: Arc<Gateway>, scrapes: Arc<Scrapes>) -> impl IntoResponse {
    let rendered = scrapes
        .get(move || super::metrics::render(&gw).map_err(|e| e.to_string()))
        .await;
    match &*rendered {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", crate::openmetrics::CONTENT_TYPE)],
            text.clone(),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            format!("{e}\n"),
        ),
    }
}

/// `/metrics` renderings, one at a time. Rendering reads every counter map (100,000 sessions
/// take about 0.1 s of CPU), so it runs off the runtime, where it cannot hold up /healthz
/// or the API; and concurrent scrapes share renderings, so that any number of them costs at
/// most one rendering in progress and one queued. A scrape gets a rendering that started
/// after it arrived: never older data than it asked for.
#[derive(Default)]
struct Scrapes {
    last: tokio::sync::Mutex<Option<Rendering>>,
}

struct Rendering {
    started: tokio::time::Instant,
    result: Arc<Result<String, String>>,
}

impl Scrapes {
    async fn get(
        &self,
        render: impl FnOnce() -> Result<String, String> + Send + 'static,
    ) -> Arc<Result<String, String>> {
        let arrived = tokio::time::Instant::now();
        let mut last = self.last.lock().await;
        if let Some(r) = last.as_ref().filter(|r| r.started >= arrived) {
            return Arc::clone(&r.result);
        }
        let started = tokio::time::Instant::now();
        let result = match tokio::task::spawn_blocking(render).await {
            Ok(r) => r,
            Err(e) => Err(format!("rendering the metrics failed: {e}")),
        };
        let result = Arc::new(result);
        *last = Some(Rendering {
            started,
            result: Arc::clone(&result),
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::AtomicUsize, mpsc};

    use super::*;

    /// A rendering function that counts itself and, given `hold`, waits to be released.
    fn render(
        renders: &Arc<AtomicUsize>,
        hold: Option<mpsc::Receiver<()>>,
    ) -> impl FnOnce() -> Result<String, String> + Send + 'static {
        let renders = Arc::clone(renders);
        move || {
            let n = renders.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(hold) = hold {
                hold.recv().map_err(|e| e.to_string())?;
            }
            Ok(format!("rendering {n}"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_scrapes_share_renderings_but_never_get_older_data_than_they_asked_for() {
        let scrapes = Arc::new(Scrapes::default());
        let renders = Arc::new(AtomicUsize::new(0));
        let (release, hold) = mpsc::channel();
        let first = tokio::spawn({
            let (scrapes, render) = (Arc::clone(&scrapes), render(&renders, Some(hold)));
            async move { scrapes.get(render).await }
        });
        while renders.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Twenty scrapes arrive while the first rendering is in progress: it is older than
        // they are, so they wait for the next one, which they all share.
        tokio::time::advance(Duration::from_millis(1)).await;
        let later: Vec<_> = (0..20)
            .map(|_| {
                let (scrapes, render) = (Arc::clone(&scrapes), render(&renders, None));
                tokio::spawn(async move { scrapes.get(render).await })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert_eq!(*first.await.unwrap(), Ok("rendering 1".to_string()));
        for scrape in later {
            assert_eq!(*scrape.await.unwrap(), Ok("rendering 2".to_string()));
        }
        assert_eq!(renders.load(Ordering::SeqCst), 2);
        // A scrape that comes after them gets a rendering of its own.
        tokio::time::advance(Duration::from_millis(1)).await;
        let next = scrapes.get(render(&renders, None)).await;
        assert_eq!(*next, Ok("rendering 3".to_string()));
    }
}
