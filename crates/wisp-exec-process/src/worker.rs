//! One started process of a function: its Runtime API endpoint, its
//! output read into a log buffer, and what kills it when it is dropped.

use crate::runtime_api::ApiState;
use crate::sandbox;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use wisp_core::capacity::Lease;

/// Stdout/stderr of a process, attributed to its current invocation.
#[derive(Default)]
pub(crate) struct LogBuf {
    pub(crate) text: String,
    pub(crate) truncated: bool,
}

pub(crate) struct Worker {
    pub(crate) child: tokio::process::Child,
    pub(crate) api: Arc<ApiState>,
    pub(crate) server: tokio::task::JoinHandle<()>,
    pub(crate) logs: Arc<Mutex<LogBuf>>,
    /// The read ends of its stdout and stderr pipes (read by `pump`).
    pub(crate) pipes: Vec<std::os::fd::RawFd>,
    pub(crate) pid: i32,
    pub(crate) cell: Option<sandbox::Cell>,
    pub(crate) processes: Arc<AtomicUsize>,
    /// Its share of the node (memory, instance slots), for as long as it
    /// lives.
    pub(crate) lease: Option<Lease>,
    /// When it last went idle.
    pub(crate) idle_since: std::time::Instant,
}

impl Worker {
    /// Waits (up to 100 ms) until what the process wrote before its
    /// answer has been read from its pipes into its logs: an answer
    /// arrives after the output that preceded it, but the readers may not
    /// have run yet on a busy node.
    pub(crate) async fn logs_caught_up(&self) {
        for _ in 0..100 {
            let pending = self.pipes.iter().any(|&fd| {
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one c_int; an fd that is no
                // longer valid makes it fail, which reads as empty.
                unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) == 0 && n > 0 }
            });
            if !pending {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // A reader that took the last bytes appends them next.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
}

/// A warm process taken for an invocation (see
/// [`ProcessPool::take_warm`](crate::ProcessPool::take_warm)).
pub struct Warm(pub(crate) Box<Worker>);

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Warm")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.server.abort();
        self.processes.fetch_sub(1, Ordering::Relaxed);
        reap(self.pid, self.cell.take());
    }
}

/// Kills a process group this executor started (setsid at start: its
/// children die too) and removes its cell once it is gone.
pub(crate) fn reap(pid: i32, cell: Option<sandbox::Cell>) {
    if pid > 0 {
        // SAFETY: signalling a process group this executor started.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    if let Some(cell) = cell {
        // The group needs a moment to exit before its cgroups can go.
        let remove = move || cell.remove();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(remove);
            }
            Err(_) => {
                let _ = std::thread::Builder::new()
                    .name("wisp-cell-cleanup".into())
                    .spawn(remove);
            }
        }
    }
}

pub(crate) fn take_logs(logs: &Mutex<LogBuf>) -> (String, bool) {
    let mut l = logs.lock().unwrap_or_else(|p| p.into_inner());
    let t = std::mem::take(&mut l.text);
    let tr = std::mem::take(&mut l.truncated);
    (t, tr)
}

pub(crate) async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    logs: Arc<Mutex<LogBuf>>,
    max: usize,
) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut l = logs.lock().unwrap_or_else(|p| p.into_inner());
                let room = max.saturating_sub(l.text.len());
                if room == 0 {
                    l.truncated = true;
                    continue;
                }
                let s = String::from_utf8_lossy(&buf[..n.min(room)]);
                l.text.push_str(&s);
                if n > room {
                    l.truncated = true;
                }
            }
        }
    }
}
