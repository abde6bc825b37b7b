//! One long-lived thread starts every function process.
//!
//! Two kernel rules make a dedicated thread necessary:
//! - `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//!   exits, not the process. Spawned from a blocking-pool thread, a warm
//!   process was killed as soon as that thread retired after 10 s idle.
//! - A network namespace belongs to a thread. For a process without
//!   network access this thread enters a fresh namespace (loopback only),
//!   opens the process's Runtime API listener there, forks the process
//!   into it, and returns to the node's namespace. The node serves the
//!   listener from its own namespace: a socket stays in the namespace it
//!   was made in.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::mpsc;

/// What the spawner hands back: the child and its Runtime API listener.
pub type Spawned = (tokio::process::Child, std::net::TcpListener);

struct Job {
    cmd: tokio::process::Command,
    /// A network namespace of its own (loopback only) for the process.
    isolate_net: bool,
    runtime: tokio::runtime::Handle,
    reply: tokio::sync::oneshot::Sender<io::Result<Spawned>>,
}

fn sender() -> io::Result<&'static mpsc::Sender<Job>> {
    static TX: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    if let Some(tx) = TX.get() {
        return Ok(tx);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("wisp-spawner".into())
        .spawn(move || run(rx))?;
    // A racing first caller's thread ends when its unused sender drops.
    Ok(TX.get_or_init(|| tx))
}

/// Starts `cmd` on the spawner thread, with `AWS_LAMBDA_RUNTIME_API` set to
/// a loopback listener in the process's network namespace.
pub async fn spawn(cmd: tokio::process::Command, isolate_net: bool) -> io::Result<Spawned> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    sender()?
        .send(Job {
            cmd,
            isolate_net,
            runtime: tokio::runtime::Handle::current(),
            reply,
        })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

fn run(rx: mpsc::Receiver<Job>) {
    // The node's own network namespace, to come back to.
    let home = std::fs::File::open("/proc/thread-self/ns/net").ok();
    while let Ok(mut job) = rx.recv() {
        let _rt = job.runtime.enter();
        let result = match (&home, job.isolate_net) {
            (Some(home), true) => isolated(&mut job.cmd, home),
            _ => start(&mut job.cmd),
        };
        let _ = job.reply.send(result);
    }
}

fn start(cmd: &mut tokio::process::Command) -> io::Result<Spawned> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    cmd.env("AWS_LAMBDA_RUNTIME_API", listener.local_addr()?.to_string());
    Ok((cmd.spawn()?, listener))
}

fn isolated(cmd: &mut tokio::process::Command, home: &std::fs::File) -> io::Result<Spawned> {
    // SAFETY: unshare affects this thread only; setns below restores it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::other(format!(
            "network namespace: {}",
            io::Error::last_os_error()
        )));
    }
    let result = loopback_up().and_then(|()| start(cmd));
    // SAFETY: `home` is this thread's original network namespace.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        // Never start another process from the wrong namespace.
        let e = io::Error::last_os_error();
        tracing::error!(error = %e, "cannot return to the node's network namespace");
        std::process::abort();
    }
    result
}

/// Brings up `lo` in this thread's (new) network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain datagram socket used for interface ioctls; `ifreq`
    // is zeroed and holds a NUL-terminated name.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
