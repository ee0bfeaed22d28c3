//! Counters, gauges and histograms kept in atomics; `/hub/metrics` renders
//! them as Prometheus text. Nothing here locks on the proxy's hot path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A histogram with fixed buckets (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

const LATENCY_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Relaxed));
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {n}");
    }
}

pub struct Metrics {
    pub open_websockets: AtomicI64,
    pub websockets_total: AtomicU64,
    pub proxied_requests: AtomicU64,
    pub proxied_bytes: Arc<AtomicU64>,
    pub visits_assigned: AtomicU64,
    pub visits_full: AtomicU64,
    pub registrations: AtomicU64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    /// Recycles by reason label.
    pub recycles: Mutex<BTreeMap<&'static str, u64>>,
    /// From the login form's POST to its response.
    pub login_seconds: Histogram,
    /// From asking for a server to its route being open.
    pub spawn_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            open_websockets: AtomicI64::new(0),
            websockets_total: AtomicU64::new(0),
            proxied_requests: AtomicU64::new(0),
            proxied_bytes: Arc::new(AtomicU64::new(0)),
            visits_assigned: AtomicU64::new(0),
            visits_full: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            recycles: Mutex::new(BTreeMap::new()),
            login_seconds: Histogram::new(LATENCY_BUCKETS),
            spawn_seconds: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// Decrements the open-WebSocket gauge when the tunnel ends.
pub struct OpenWebSocket(Arc<Metrics>);

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.open_websockets.fetch_sub(1, Relaxed);
    }
}

/// Pool numbers, passed in by the caller (metrics does not know the pool).
pub struct PoolGauges {
    pub warm: u64,
    pub assigned: u64,
    pub cap: u64,
    pub queued: u64,
    pub docker_up: bool,
}

impl Metrics {
    pub fn websocket_opened(self: &Arc<Self>) -> OpenWebSocket {
        self.open_websockets.fetch_add(1, Relaxed);
        self.websockets_total.fetch_add(1, Relaxed);
        OpenWebSocket(self.clone())
    }

    pub fn recycled(&self, reason: &'static str) {
        *self.recycles.lock().expect("metrics lock").entry(reason).or_default() += 1;
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, pool: &PoolGauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge("nbgate_pool_warm", "Warm containers ready to hand out.", pool.warm as f64);
        gauge("nbgate_pool_assigned", "Containers assigned to a user or visitor.", pool.assigned as f64);
        gauge("nbgate_pool_cap", "Most containers at once, warm and assigned.", pool.cap as f64);
        gauge("nbgate_queue_waiting", "Users waiting in line for a server.", pool.queued as f64);
        gauge(
            "nbgate_docker_up",
            "1 when the Docker engine answers.",
            if pool.docker_up { 1.0 } else { 0.0 },
        );
        gauge(
            "nbgate_websockets_open",
            "WebSocket tunnels open now.",
            self.open_websockets.load(Relaxed) as f64,
        );
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("nbgate_websockets_total", "WebSocket tunnels opened.", self.websockets_total.load(Relaxed));
        counter(
            "nbgate_proxied_requests_total",
            "HTTP requests proxied to notebook servers.",
            self.proxied_requests.load(Relaxed),
        );
        counter(
            "nbgate_proxied_response_bytes_total",
            "Response body bytes proxied from notebook servers.",
            self.proxied_bytes.load(Relaxed),
        );
        counter("nbgate_registrations_total", "Accounts registered.", self.registrations.load(Relaxed));
        counter("nbgate_logins_total", "Successful logins.", self.logins.load(Relaxed));
        counter("nbgate_login_failures_total", "Failed logins.", self.login_failures.load(Relaxed));
        counter(
            "nbgate_visits_total",
            "Ephemeral visits given a container.",
            self.visits_assigned.load(Relaxed),
        );
        counter(
            "nbgate_visits_full_total",
            "Ephemeral visits shown the full page.",
            self.visits_full.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP nbgate_recycles_total Servers recycled, by reason.\n# TYPE nbgate_recycles_total counter"
        );
        for (reason, n) in self.recycles.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "nbgate_recycles_total{{reason=\"{reason}\"}} {n}");
        }
        self.login_seconds.render(&mut out, "nbgate_login_seconds", "Time to answer a login form.");
        self.spawn_seconds.render(
            &mut out,
            "nbgate_spawn_seconds",
            "Time from asking for a server to its route being open.",
        );
        out
    }
}

/// A response body that counts the bytes passing through it.
pub struct Counted<B> {
    inner: B,
    counter: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: Arc<AtomicU64>) -> Self {
        Self { inner, counter }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                self.counter.fetch_add(data.len() as u64, Relaxed);
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.recycled("idle");
        m.recycled("idle");
        m.login_seconds.observe(Duration::from_millis(30));
        let text = m.render(&PoolGauges { warm: 2, assigned: 3, cap: 10, queued: 0, docker_up: true });
        assert!(text.contains("nbgate_pool_warm 2\n"));
        assert!(text.contains("nbgate_recycles_total{reason=\"idle\"} 2\n"));
        assert!(text.contains("nbgate_login_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("nbgate_login_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("nbgate_login_seconds_count 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(!name.is_empty() && value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
