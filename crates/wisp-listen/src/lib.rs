//! The HTTP/1.1 accept loop every listener of a node runs (the gateway, the
//! S3 API and each process's Lambda Runtime API endpoint): hyper's
//! connection driver with a header-read timeout, an idle keep-alive timeout
//! and a connection cap, and graceful shutdown.
//!
//! - **Header timeout**: a connection must deliver a complete request head
//!   within `header_timeout` of its first byte (of being accepted, for its
//!   first request); a client sending nothing, or a header line now and
//!   then, is dropped.
//! - **Idle timeout**: a keep-alive connection with no request in flight
//!   and no new bytes is dropped after `idle_timeout`.
//! - **Connection cap**: at `max_connections` open connections, a new one
//!   sheds the oldest connection that is not in a request (still waiting
//!   for a head, or idle between requests); when every connection is in a
//!   request, the new one gets a `503` and is closed. Running out of file
//!   descriptors (`EMFILE`) sheds the same way and backs off instead of
//!   spinning on `accept`.
//! - **Backlog**: [`bind`] listens with a backlog of [`LISTEN_BACKLOG`], so
//!   a burst of new connections waits in the kernel instead of being
//!   dropped (and retried a second later by each client).
//!
//! Request bodies and responses are not timed here: the gateway reads an
//! invocation's body under its own timeout, and a response runs under its
//! function's deadline.

use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// Timeouts and cap of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSettings {
    /// Time to deliver a complete request head (`wisp serve --header-timeout`).
    pub header_timeout: Duration,
    /// Time a keep-alive connection may sit without a request
    /// (`wisp serve --idle-timeout`).
    pub idle_timeout: Duration,
    /// Connections open at once (`wisp serve --max-connections`).
    pub max_connections: usize,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

impl ListenerSettings {
    /// A process's Lambda Runtime API endpoint (loopback, one runtime):
    /// a few connections; runtimes keep one idle between invocations, so
    /// the idle timeout is long (an idle process is evicted before).
    pub const RUNTIME_API: Self = Self {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(3600),
        max_connections: 64,
    };
}

/// Raises the soft limit of open files to the hard limit, so the
/// connection cap, not `EMFILE`, is what bounds connections. Returns the
/// soft limit in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// Connections the kernel may hold accepted-but-not-yet-taken for a
/// listener (capped by `net.core.somaxconn`). The standard library's
/// 128 overflows when thousands of clients connect at once: the kernel
/// then drops their SYNs and each waits a second or more to retry.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` (`host:port`, the first address it
/// resolves to) with a backlog of [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address"),
        )
    }))
}

fn fd_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

const NONE: u64 = u64::MAX;

/// One open connection, as the accept loop and its own task see it.
struct Conn {
    opened: Instant,
    /// Requests whose response has not been sent yet.
    in_flight: AtomicUsize,
    /// When (ms after `opened`) the request head being read began; NONE
    /// while a request is in flight or the connection is idle.
    head_since: AtomicU64,
    /// When (ms after `opened`) the last response was sent.
    idle_since: AtomicU64,
    kill: Notify,
}

impl Conn {
    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// When to drop the connection unless something happens first
    /// (ms after `opened`); `None` while a request is in flight.
    fn deadline(&self, s: &ListenerSettings) -> Option<(u64, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Acquire) {
            NONE => Some((
                self.idle_since
                    .load(Ordering::Acquire)
                    .saturating_add(s.idle_timeout.as_millis() as u64),
                "idle timeout",
            )),
            h => Some((
                h.saturating_add(s.header_timeout.as_millis() as u64),
                "header timeout",
            )),
        }
    }
}

/// Marks a request in flight until its response body is dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(c: Arc<Conn>) -> Self {
        c.in_flight.fetch_add(1, Ordering::AcqRel);
        c.head_since.store(NONE, Ordering::Release);
        Self(c)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that ends the request's `InFlight` when dropped.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when the first byte of a new request head arrives.
struct Watched {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.conn.in_flight.load(Ordering::Acquire) == 0
            && self.conn.head_since.load(Ordering::Acquire) == NONE
        {
            let now = self.conn.now();
            self.conn.head_since.store(now, Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The open connections of one listener, oldest first.
struct Registry {
    conns: Mutex<VecDeque<Weak<Conn>>>,
    open: AtomicUsize,
    closed: Notify,
}

impl Registry {
    fn add(&self, c: &Arc<Conn>, cap: usize) {
        let mut q = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() > cap.saturating_mul(2).max(64) {
            q.retain(|w| w.strong_count() > 0);
        }
        q.push_back(Arc::downgrade(c));
    }

    /// Drops the oldest connection that is not in a request; false when
    /// every connection is.
    fn shed_one(&self) -> bool {
        let mut q = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = 0;
        while i < q.len() {
            match q[i].upgrade() {
                None => {
                    q.remove(i);
                }
                Some(c) if c.in_flight.load(Ordering::Acquire) == 0 => {
                    q.remove(i);
                    c.kill.notify_one();
                    return true;
                }
                Some(_) => i += 1,
            }
        }
        false
    }
}

/// Counts a connection as open until its task ends.
struct Open(Arc<Registry>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_waiters();
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, lets open requests finish and returns once every connection
/// has closed.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut settings = settings;
    // Leave room for the node's own files (databases, blobs, processes).
    if let Some(fds) = fd_soft_limit() {
        let room = fds.saturating_sub(256).max(16) as usize;
        if settings.max_connections > room {
            tracing::warn!(
                max_connections = settings.max_connections,
                open_files_limit = fds,
                "connection cap lowered to {room} to fit the open-files limit (ulimit -n)"
            );
            settings.max_connections = room;
        }
    }
    let settings = settings;
    let registry = Arc::new(Registry {
        conns: Mutex::new(VecDeque::new()),
        open: AtomicUsize::new(0),
        closed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let local = listener.local_addr().ok();
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) if out_of_descriptors(&e) => {
                if refused_logged.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(error = %e, listener = ?local, "out of file descriptors: shedding idle connections");
                    refused_logged = Instant::now();
                }
                registry.shed_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        if registry.open.load(Ordering::Acquire) >= settings.max_connections && !registry.shed_one()
        {
            if refused_logged.elapsed() > Duration::from_secs(10) {
                tracing::warn!(
                    max_connections = settings.max_connections,
                    listener = ?local,
                    "connection cap reached with every connection in a request: refusing new ones"
                );
                refused_logged = Instant::now();
            }
            refuse(tcp, settings.max_connections);
            continue;
        }
        // No Nagle delay: a response's head and body may leave in separate
        // writes, and a client waiting on delayed ACKs would see 40 ms stalls.
        let _ = tcp.set_nodelay(true);
        let conn = Arc::new(Conn {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            kill: Notify::new(),
        });
        registry.open.fetch_add(1, Ordering::AcqRel);
        registry.add(&conn, settings.max_connections);
        let open = Open(registry.clone());
        tokio::spawn(connection(
            tcp,
            conn,
            app.clone(),
            settings,
            stop_rx.clone(),
            open,
        ));
    }
    let _ = stop_tx.send(true);
    drop(listener);
    loop {
        let closed = registry.closed.notified();
        if registry.open.load(Ordering::Acquire) == 0 {
            break;
        }
        closed.await;
    }
    Ok(())
}

/// Answers a connection over the cap with a 503 (best effort: the socket
/// is fresh, so the small answer fits its buffer) and closes it.
fn refuse(tcp: TcpStream, cap: usize) {
    let body = format!(
        r#"{{"error":{{"code":"too_many_connections","message":"the node has {cap} connections open, all in a request (wisp serve --max-connections); retry shortly"}}}}"#
    );
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.try_write(resp.as_bytes());
}

async fn connection(
    tcp: TcpStream,
    conn: Arc<Conn>,
    app: axum::Router,
    settings: ListenerSettings,
    mut stop: watch::Receiver<bool>,
    _open: Open,
) {
    let io = TokioIo::new(Watched {
        tcp,
        conn: conn.clone(),
    });
    let for_requests = conn.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let in_flight = InFlight::start(for_requests.clone());
        let app = app.clone();
        async move {
            let resp = route(app, req).await;
            Ok::<_, Infallible>(resp.map(|b| {
                axum::body::Body::new(Tracked {
                    inner: b,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer backs ours up (it also runs while a
    // keep-alive connection waits, so it may not be shorter than either).
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout.max(settings.idle_timeout));
    let served = http.serve_connection(io, svc);
    let mut served = std::pin::pin!(served);
    let mut stopping = false;
    let poll_every = settings
        .header_timeout
        .min(settings.idle_timeout)
        .max(Duration::from_millis(100));
    let mut next = tokio::time::Instant::now() + poll_every;
    loop {
        tokio::select! {
            _ = served.as_mut() => break,
            _ = conn.kill.notified() => {
                tracing::debug!("connection shed (connection cap)");
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(next) => {
                match conn.deadline(&settings) {
                    None => next = tokio::time::Instant::now() + poll_every,
                    Some((at, why)) => {
                        let now = conn.now();
                        if now >= at {
                            tracing::debug!("connection closed: {why}");
                            break;
                        }
                        next = tokio::time::Instant::now() + Duration::from_millis(at - now);
                    }
                }
            }
        }
    }
}

/// Calls the router as a service (it is always ready and never fails).
async fn route(
    app: axum::Router,
    req: hyper::Request<hyper::body::Incoming>,
) -> axum::response::Response {
    let svc = hyper_util::service::TowerToHyperService::new(app);
    match hyper::service::Service::call(&svc, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
