//! The daemon's metrics endpoint: `GET /metrics` over HTTP/1 (hyper), on the daemon's runtime
//! but never in its way. Each scrape reads the filter on a blocking thread (the reading may wait
//! for the pin directory's lock while a change is written), one reading at a time, with a
//! deadline: a reading that fails or is late is answered with the daemon's health and
//! `floodgate_up 0`, so Prometheus sees the controller alive and the pins unavailable. Anything
//! but `/metrics` gets 404; anything but GET or HEAD on it, 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::observe::collect::{collect, Observation};
use crate::observe::metrics::{encode, DaemonHealth, Format};
use crate::state::PinDir;

/// The longest a scrape waits for a reading of the filter.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this (a scraper sends it at once): idle and
/// slow clients give their slot back quickly.
const HEADER_DEADLINE: Duration = Duration::from_secs(2);
/// The longest one connection is served, keep-alive included: a client that pipelines
/// requests and never reads the answers cannot keep its slot.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// How long a connection past its deadline gets to finish the answer under way.
const CLOSING_GRACE: Duration = Duration::from_secs(5);
/// Scrapes within this of a reading share it: many scrapers (or one hammering) cost one
/// reading of the filter, not one each.
const READING_REUSED_FOR: Duration = Duration::from_secs(1);

/// Shared with the daemon, which records each apply of its policy file.
pub type Health = Arc<Mutex<DaemonHealth>>;

/// Bind the metrics address (before anything else happens: a port in use fails the daemon's
/// start, naming the address).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    std_listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    TcpListener::from_std(std_listener).with_context(|| format!("cannot serve metrics on {addr}"))
}

struct Server {
    pins: PinDir,
    health: Health,
    /// One reading of the filter at a time: scrapes queue here, not on the pin lock, and a
    /// reading that outlives its scrape still keeps the next one waiting. It holds the last
    /// reading and when it was taken.
    reading: Arc<tokio::sync::Mutex<Option<Reading>>>,
}

/// A reading of the filter, and when it was taken.
type Reading = (Instant, Arc<Observation>);

/// Serve `listener` until the runtime ends.
pub async fn serve(listener: TcpListener, pins: PinDir, health: Health) {
    let server = Arc::new(Server {
        pins,
        health,
        reading: Arc::new(tokio::sync::Mutex::new(None)),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(server.respond(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                () = tokio::time::sleep(CONNECTION_DEADLINE) => {
                    // Finish the answer under way (a scrape is not cut in half), then close;
                    // a client that does not read it gets a little longer, not forever.
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(CLOSING_GRACE, conn.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(e) = served {
                debug!("metrics: connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Server {
    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/metrics" {
            return plain(
                StatusCode::NOT_FOUND,
                "not found: metrics are at /metrics\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let format = Format::from_accept(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
        let text = self.exposition(format).await;
        let mut r = Response::new(Full::new(Bytes::from(text)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        r
    }

    async fn exposition(&self, format: Format) -> String {
        let pins = self.pins.clone();
        let reading = tokio::time::timeout(READ_DEADLINE, async {
            // Held until the reading ends, also when this scrape has given up on it.
            let mut last = Arc::clone(&self.reading).lock_owned().await;
            if let Some((at, obs)) = last.as_ref() {
                if at.elapsed() < READING_REUSED_FOR {
                    return Ok(Ok(Some(Arc::clone(obs))));
                }
            }
            tokio::task::spawn_blocking(move || {
                let obs = collect(&pins).map(|o| o.map(Arc::new));
                if let Ok(Some(o)) = &obs {
                    *last = Some((Instant::now(), Arc::clone(o)));
                }
                obs
            })
            .await
        })
        .await;
        let obs = match reading {
            Ok(Ok(Ok(obs))) => obs,
            Ok(Ok(Err(e))) => {
                warn!("metrics: cannot read the filter: {e:#}");
                None
            }
            Ok(Err(e)) => {
                warn!("metrics: the reading failed: {e}");
                None
            }
            Err(_) => {
                warn!(
                    "metrics: no reading of the filter within {READ_DEADLINE:?} (is a long change holding the pin directory?)"
                );
                None
            }
        };
        let health = self.health.lock().expect("not poisoned").clone();
        encode(obs.as_deref(), Some(&health), format)
    }
}
