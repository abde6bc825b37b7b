//! Long runners make room: a guest starts on the runtime that accepted its
//! request (no hand-off on the hot path), and once it has used more than
//! [`EngineConfig::demote_after`](crate::EngineConfig) of CPU time it moves
//! to the background runtime, whose threads run at the lowest priority
//! (nice 19). The threads that accept, route and run short guests then
//! always get the CPU first; a CPU-bound guest only gets what they leave.
//!
//! Guests yield at every epoch tick (the epoch deadline callback answers
//! `Yield`), so a looping guest comes back here every tick, and its move
//! happens between two polls.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

type Guest<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The background runtime: as many threads as cores, at nice 19. Started
/// on first use and kept for the life of the process (a tokio runtime may
/// not be dropped from async code).
fn background() -> Option<&'static Handle> {
    static BG: OnceLock<Option<Handle>> = OnceLock::new();
    BG.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wisp-long-guest")
            .on_thread_start(lower_priority)
            .enable_all()
            .build();
        match rt {
            Ok(rt) => {
                let handle = rt.handle().clone();
                // Kept for the life of the process, on purpose.
                std::mem::forget(rt);
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the runtime for long-running guests; they stay on the request threads");
                None
            }
        }
    })
    .as_ref()
}

/// Puts the calling thread at the lowest scheduling priority. On Linux,
/// `setpriority(PRIO_PROCESS, 0, …)` applies to the calling thread only.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only changes the calling thread's nice value.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Runs `guest` on a new task of the current runtime; moves it to the
/// background runtime once its polls have taken more than `after` in total.
pub(crate) fn spawn(guest: impl Future<Output = ()> + Send + 'static, after: Duration) {
    tokio::spawn(run(guest, after));
}

/// The same on the calling task (no spawn), for callers that await the
/// guest themselves. `None` when the guest panicked after it moved.
pub(crate) fn run<T: Send + 'static>(
    guest: impl Future<Output = T> + Send + 'static,
    after: Duration,
) -> impl Future<Output = Option<T>> + Send {
    Demotable {
        state: State::Here(Box::pin(guest)),
        cpu: Duration::ZERO,
        after,
    }
}

enum State<T> {
    Here(Guest<T>),
    Moved(JoinHandle<T>),
    Done,
}

struct Demotable<T> {
    state: State<T>,
    /// Time spent in the guest's polls so far.
    cpu: Duration,
    after: Duration,
}

impl<T: Send + 'static> Future for Demotable<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Here(guest) => {
                    let t = Instant::now();
                    let polled = guest.as_mut().poll(cx);
                    this.cpu += t.elapsed();
                    if let Poll::Ready(v) = polled {
                        this.state = State::Done;
                        return Poll::Ready(Some(v));
                    }
                    if this.cpu < this.after {
                        return Poll::Pending;
                    }
                    let Some(bg) = background() else {
                        this.after = Duration::MAX;
                        return Poll::Pending;
                    };
                    let State::Here(guest) = std::mem::replace(&mut this.state, State::Done) else {
                        return Poll::Pending; // unreachable: matched above
                    };
                    tracing::debug!(
                        cpu_ms = this.cpu.as_millis() as u64,
                        "long-running guest moved to the background runtime"
                    );
                    this.state = State::Moved(bg.spawn(guest));
                }
                State::Moved(handle) => {
                    // A guest that panicked has dropped its responder: the
                    // caller answers for it.
                    return Pin::new(handle).poll(cx).map(Result::ok);
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}
