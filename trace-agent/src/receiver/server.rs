//! Listeners (TCP and Unix socket), the bounded accept loops and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};

use super::AppState;
use super::routes;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A Unix-socket client (always local).
    Unix,
}

impl Peer {
    /// Whether the client is on this machine.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Tcp(a) => a.ip().is_loopback(),
            Self::Unix => true,
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket at the path.
    Unix(UnixListener, PathBuf),
}

/// Largest read buffer of a connection (request head included).
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

fn serve_connection<S>(
    state: &Arc<AppState>,
    graceful: &GracefulShutdown,
    io: S,
    peer: Peer,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let st = Arc::clone(state);
    let svc = service_fn(move |req| {
        let st = Arc::clone(&st);
        async move { Ok::<_, Infallible>(routes::handle(st, peer, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper's read buffer grows to 400 KB per connection by default (and twice that while
        // a body chunk still holds the old one): 1000 connections streaming bodies would pin
        // ~1 GB. 64 KiB is ample for request heads and keeps reads large.
        .max_buf_size(READ_BUFFER_BYTES)
        .header_read_timeout(state.config.receiver_timeout)
        .serve_connection(TokioIo::new(io), svc);
    let fut = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        drop(permit);
    });
}

/// Length of an `apm_config.connection_limit` lease (as the Go agent's rate-limited listener).
pub const CONNECTION_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// `apm_config.connection_limit`: at most `limit` TCP connections accepted per
/// [`CONNECTION_LEASE`] (0: no limit). Pure: the caller passes the time.
#[derive(Debug)]
pub struct ConnectionLease {
    limit: usize,
    started: Option<std::time::Instant>,
    used: usize,
}

impl ConnectionLease {
    /// A lease of `limit` connections per 30 s (0: unlimited).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            started: None,
            used: 0,
        }
    }

    /// Whether a connection accepted at `now` may be served.
    pub fn admit(&mut self, now: std::time::Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        match self.started {
            Some(t) if now.saturating_duration_since(t) < CONNECTION_LEASE => {}
            _ => {
                self.started = Some(now);
                self.used = 0;
            }
        }
        if self.used < self.limit {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

/// Accepts connections until `shutdown` turns true, at most `max_connections` at a time and
/// (TCP) at most `connection_limit` per 30 s lease; connections beyond the lease are closed at
/// once and counted.
pub async fn accept_loop(
    listener: Listener,
    state: Arc<AppState>,
    graceful: Arc<GracefulShutdown>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let mut lease = ConnectionLease::new(state.config.connection_limit);
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, _)) if !lease.admit(std::time::Instant::now()) => {
                drop(stream);
                let refused = state
                    .stats
                    .connections_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if refused.is_multiple_of(1000) {
                    tracing::warn!(
                        limit = state.config.connection_limit,
                        "connection refused: apm_config.connection_limit connections already accepted in this 30 s lease"
                    );
                }
            }
            Ok(Accepted::Tcp(stream, addr)) => {
                let _ = stream.set_nodelay(true);
                serve_connection(&state, &graceful, stream, Peer::Tcp(addr), permit);
            }
            Ok(Accepted::Unix(stream)) => serve_connection(&state, &graceful, stream, Peer::Unix, permit),
            Err(e) => {
                // EMFILE and friends: log and keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_lease_admits_its_limit_then_renews_after_30_s() {
        let t0 = Instant::now();
        let mut lease = ConnectionLease::new(2);
        assert!(lease.admit(t0));
        assert!(lease.admit(t0 + Duration::from_secs(1)));
        assert!(!lease.admit(t0 + Duration::from_secs(29)));
        assert!(lease.admit(t0 + CONNECTION_LEASE));
        let mut off = ConnectionLease::new(0);
        assert!((0..10_000).all(|_| off.admit(t0)));
    }
}
