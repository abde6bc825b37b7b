//! The access log and the audit log, written off the request path: the
//! gateway hands entries to a bounded channel (never blocking; a full
//! channel drops and counts), and a low-priority thread writes them in
//! batches, prunes old entries, and saves the API keys' quota counts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};
use wisp_core::{AccessEntry, AccessLogStore, AuditEntry, TenantStore};
use wisp_engine::Dropped;

/// Retention of the access log.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    pub max_records: u64,
    pub max_age: Duration,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            max_records: 1_000_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

const QUEUE: usize = 65_536;
const BATCH_MAX: usize = 4096;
const WINDOW: Duration = Duration::from_millis(100);
const PRUNE_EVERY: Duration = Duration::from_secs(30);
const PERIODIC_EVERY: Duration = Duration::from_secs(1);

enum Msg {
    Access(Box<AccessEntry>),
    Audit(Box<AuditEntry>),
    Stop(std::sync::mpsc::Sender<()>),
}

/// Work the writer thread does every second and once more when it stops
/// (saving quota counts).
pub type Periodic = Box<dyn Fn() + Send>;

pub struct AccessLog {
    tx: SyncSender<Msg>,
    /// Entries lost (`wisp_access_log_dropped_total`), by why.
    pub dropped: Arc<Dropped>,
}

impl AccessLog {
    pub fn start(
        access: Arc<dyn AccessLogStore>,
        audit: Arc<dyn TenantStore>,
        settings: AccessLogSettings,
        periodic: Periodic,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(Dropped::default());
        let d = dropped.clone();
        std::thread::Builder::new()
            .name("wisp-access".into())
            .spawn(move || writer(rx, access, audit, settings, periodic, d))?;
        Ok(Arc::new(Self { tx, dropped }))
    }

    fn send(&self, m: Msg) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(m) {
            self.dropped.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn access(&self, e: AccessEntry) {
        self.send(Msg::Access(Box::new(e)));
    }

    pub fn audit(&self, e: AuditEntry) {
        self.send(Msg::Audit(Box::new(e)));
    }

    /// Writes everything received so far and stops the writer.
    pub async fn flush_and_stop(&self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let tx = self.tx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if tx.send(Msg::Stop(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        })
        .await;
    }
}

fn writer(
    rx: Receiver<Msg>,
    access: Arc<dyn AccessLogStore>,
    audit: Arc<dyn TenantStore>,
    settings: AccessLogSettings,
    periodic: Periodic,
    dropped: Arc<Dropped>,
) {
    let mut last_prune = Instant::now();
    let mut last_periodic = Instant::now();
    let mut entries: Vec<AccessEntry> = Vec::new();
    let mut audits: Vec<AuditEntry> = Vec::new();
    let mut stop = None;
    loop {
        match rx.recv_timeout(PERIODIC_EVERY) {
            Ok(Msg::Access(e)) => entries.push(*e),
            Ok(Msg::Audit(e)) => audits.push(*e),
            Ok(Msg::Stop(ack)) => stop = Some(ack),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Sleep rather than wait on the channel, so senders need not wake
        // this thread for every entry.
        if stop.is_none() && entries.len() + audits.len() == 1 {
            std::thread::sleep(WINDOW);
        }
        while stop.is_none() && entries.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(Msg::Access(e)) => entries.push(*e),
                Ok(Msg::Audit(e)) => audits.push(*e),
                Ok(Msg::Stop(ack)) => stop = Some(ack),
                Err(_) => break,
            }
        }
        if stop.is_some() {
            while let Ok(m) = rx.try_recv() {
                match m {
                    Msg::Access(e) => entries.push(*e),
                    Msg::Audit(e) => audits.push(*e),
                    Msg::Stop(_) => {}
                }
            }
        }
        if !entries.is_empty() {
            if let Err(e) = access.insert_access(&entries) {
                tracing::error!(error = %e, entries = entries.len(), "writing the access log failed; the entries are dropped");
                dropped.failed(&e, entries.len());
            }
            entries.clear();
        }
        if !audits.is_empty() {
            if let Err(e) = audit.insert_audit(&audits) {
                tracing::error!(error = %e, entries = audits.len(), "writing the audit log failed; the entries are dropped");
                dropped.failed(&e, audits.len());
            }
            audits.clear();
        }
        if stop.is_some() || last_periodic.elapsed() >= PERIODIC_EVERY {
            last_periodic = Instant::now();
            periodic();
        }
        if last_prune.elapsed() > PRUNE_EVERY {
            last_prune = Instant::now();
            let min = wisp_core::time::now_ms() - settings.max_age.as_millis() as i64;
            if let Err(e) = access.prune_access(settings.max_records, min) {
                tracing::error!(error = %e, "pruning the access log failed");
            }
        }
        if let Some(ack) = stop.take() {
            let _ = ack.send(());
            break;
        }
    }
}
