//! Long runners make room, as Wasm guests do (`wisp serve
//! --long-guest-after`): an invocation whose process has used more than
//! that much CPU time since the invocation began gets the lowest
//! scheduling priority (nice 19) for its whole process group — every
//! thread of the process and of the processes it started. When the
//! invocation ends and the process is kept warm, its priority is put back
//! before it serves the next one (a process whose priority cannot be put
//! back is not reused).
//!
//! CPU time is that of the process and the processes under it (all their
//! threads), from `/proc`; it is read only once an invocation has run
//! `after` of wall-clock time (CPU time cannot be more), then whenever it
//! could next have reached `after`.

use std::time::Duration;
use tokio::time::Instant;

/// The nice value of a demoted process group.
const LOWEST: i32 = 19;

/// The shortest pause between two readings of a running invocation's CPU
/// time.
const MIN_CHECK: Duration = Duration::from_millis(5);

/// The demotion state of one invocation.
pub(crate) struct Demotion {
    pid: i32,
    after: Duration,
    /// CPU time of the process when the invocation began.
    start_cpu: Duration,
    next: Instant,
    /// The nice value it had, once demoted.
    prior: Option<i32>,
}

impl Demotion {
    /// `None` when demotion is off (`after` is `Duration::MAX`) or the
    /// process's CPU time cannot be read.
    pub(crate) fn start(pid: i32, after: Duration) -> Option<Self> {
        if after == Duration::MAX || pid <= 0 {
            return None;
        }
        Some(Self {
            pid,
            after,
            start_cpu: cpu_time(pid)?,
            next: Instant::now() + after,
            prior: None,
        })
    }

    /// Resolves when the next check is due.
    pub(crate) async fn due(&self) {
        tokio::time::sleep_until(self.next).await
    }

    /// Whether checks are still needed (it was not demoted yet).
    pub(crate) fn watching(&self) -> bool {
        self.prior.is_none()
    }

    /// Reads the CPU time used so far; past `after`, demotes the process
    /// group, else schedules the next check.
    pub(crate) fn check(&mut self) {
        let Some(now) = cpu_time(self.pid) else {
            // The process is gone: nothing to demote (its exit is seen
            // by the invocation).
            self.next = Instant::now() + Duration::from_secs(3600);
            return;
        };
        let used = now.saturating_sub(self.start_cpu);
        if used < self.after {
            self.next = Instant::now() + (self.after - used).max(MIN_CHECK);
            return;
        }
        let prior = nice_of(self.pid).unwrap_or(0);
        // SAFETY: setpriority only changes the priority of the group of a
        // process this executor started (setsid at start).
        let rc = unsafe { libc::setpriority(libc::PRIO_PGRP, self.pid as libc::id_t, LOWEST) };
        if rc == 0 {
            tracing::debug!(
                pid = self.pid,
                cpu_ms = used.as_millis() as u64,
                "long-running process function moved to nice {LOWEST}"
            );
        } else {
            tracing::debug!(pid = self.pid, error = %std::io::Error::last_os_error(), "could not lower a long-running process's priority");
        }
        self.prior = Some(prior);
    }

    /// Puts the group's priority back after the invocation. False when
    /// that failed (then the process must not serve another invocation).
    pub(crate) fn restore(self) -> bool {
        let Some(prior) = self.prior else {
            return true;
        };
        // SAFETY: as in `check`.
        let rc = unsafe { libc::setpriority(libc::PRIO_PGRP, self.pid as libc::id_t, prior) };
        if rc != 0 {
            tracing::warn!(pid = self.pid, error = %std::io::Error::last_os_error(), "could not restore a process function's priority; the process is not reused");
        }
        rc == 0
    }
}

/// The nice value of process `pid` (field 19 of `/proc/<pid>/stat`).
fn nice_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(16)?.parse().ok()
}

/// The fields of `/proc/<pid>/stat` after the command name (from field 3,
/// the state, on).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields
    // start after its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU time of process `pid` and the processes under it (in the sandbox,
/// `pid` waits for the function's process in its PID namespace): the sum
/// of their utime + stime + cutime + cstime, walking `/proc/*/task/*/children`
/// (at most 64 processes).
fn cpu_time(pid: i32) -> Option<Duration> {
    let mut ticks = process_ticks(pid)?;
    let mut todo = children(pid);
    let mut seen = 1;
    while let Some(c) = todo.pop() {
        if seen >= 64 {
            break;
        }
        seen += 1;
        ticks += process_ticks(c).unwrap_or(0);
        todo.extend(children(c));
    }
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// utime + stime + cutime + cstime of one process, in clock ticks.
fn process_ticks(pid: i32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(
        f.get(11..15)?
            .iter()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .sum(),
    )
}

/// The children of every thread of process `pid`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_time_of_a_process_and_its_children() {
        let pid = std::process::id() as i32;
        // A child that spins: its time counts for its parent.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let before = cpu_time(pid).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let used = cpu_time(pid).unwrap() - before;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(used >= Duration::from_millis(100), "{used:?}");
    }

    #[test]
    fn reads_its_own_cpu_time_and_nice() {
        let pid = std::process::id() as i32;
        let before = cpu_time(pid).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let used = cpu_time(pid).unwrap() - before;
        assert!(used >= Duration::from_millis(100), "{used:?}");
        assert!(nice_of(pid).is_some());
    }
}
