//! Batched activation recording: the request path hands records to a
//! bounded channel (never blocking; a full channel drops and counts), and a
//! dedicated low-priority thread writes them in one transaction per batch
//! window, so recording never competes with requests for the CPU. Retention
//! runs on the same thread.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};
use wisp_core::{Activation, ActivationStore};

#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Keep at most this many activation records.
    pub max_records: u64,
    /// Drop records older than this.
    pub max_age: Duration,
    /// How long records may wait before they are written (the window lost
    /// on a `kill -9`).
    pub batch_window: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            max_records: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            batch_window: Duration::from_millis(100),
        }
    }
}

const BATCH_MAX: usize = 4096;
const QUEUE: usize = 65_536;
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Niceness of the writer thread: requests win the CPU when both are ready.
const WRITER_NICE: i32 = 10;

enum Msg {
    Record(Box<Activation>),
    /// Write everything received so far, acknowledge, and stop.
    Stop(std::sync::mpsc::Sender<()>),
    /// Write everything received so far, acknowledge, and go on.
    Flush(std::sync::mpsc::Sender<()>),
}

pub struct Recorder {
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    pub fn start(
        store: Arc<dyn ActivationStore>,
        settings: RetentionSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, RecorderHandle)> {
        let (tx, rx) = sync_channel(QUEUE);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("wisp-recorder".into())
            .spawn(move || writer(rx, store, settings, m))?;
        Ok((
            Self {
                tx: tx.clone(),
                metrics,
            },
            RecorderHandle { tx },
        ))
    }

    /// Waits until every record queued so far is written (e.g. before
    /// deleting a namespace's records, so none is written after).
    pub async fn flush(&self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let tx = self.tx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if tx.send(Msg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        })
        .await;
    }

    /// Queues a record; never blocks. A full queue drops the record and
    /// counts it in `wisp_activation_records_dropped_total{reason="queue_full"}`.
    pub fn record(&self, a: Activation) {
        match self.tx.try_send(Msg::Record(Box::new(a))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics
                    .records_dropped
                    .queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Stops the recorder after writing everything it was given.
pub struct RecorderHandle {
    tx: SyncSender<Msg>,
}

impl RecorderHandle {
    pub async fn flush_and_stop(self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let tx = self.tx;
        let _ = tokio::task::spawn_blocking(move || {
            if tx.send(Msg::Stop(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        })
        .await;
    }
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread (who = 0 is this thread's
    // id on Linux) only changes its scheduling niceness.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, WRITER_NICE);
    }
}

fn writer(
    rx: Receiver<Msg>,
    store: Arc<dyn ActivationStore>,
    settings: RetentionSettings,
    metrics: Arc<Metrics>,
) {
    lower_priority();
    let mut last_prune = Instant::now();
    let mut last_full = false;
    let mut batch: Vec<Activation> = Vec::with_capacity(BATCH_MAX);
    let mut stop: Option<std::sync::mpsc::Sender<()>> = None;
    // A flush: acknowledged once what came before it is written.
    let mut flushed: Option<std::sync::mpsc::Sender<()>> = None;
    loop {
        // Wait for the first record, then let the window fill up.
        match rx.recv() {
            Ok(Msg::Record(a)) => batch.push(*a),
            Ok(Msg::Stop(ack)) => stop = Some(ack),
            Ok(Msg::Flush(ack)) => flushed = Some(ack),
            Err(_) => break,
        }
        // Let the window fill up by sleeping, not by waiting on the
        // channel: a sender then finds no waiting receiver and does not
        // have to wake this thread for every record.
        // (Not when the last batch was full: then records are waiting.)
        if stop.is_none() && flushed.is_none() && !last_full {
            std::thread::sleep(settings.batch_window);
        }
        while stop.is_none() && flushed.is_none() && batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(Msg::Record(a)) => batch.push(*a),
                Ok(Msg::Stop(ack)) => stop = Some(ack),
                Ok(Msg::Flush(ack)) => flushed = Some(ack),
                Err(_) => break,
            }
        }
        if stop.is_some() {
            while let Ok(Msg::Record(a)) = rx.try_recv() {
                batch.push(*a);
            }
        }
        last_full = batch.len() >= BATCH_MAX;
        if !batch.is_empty() {
            if let Err(e) = store.insert_activations(&batch) {
                tracing::error!(error = %e, records = batch.len(), "writing activation records failed; they are dropped");
                metrics.records_dropped.failed(&e, batch.len());
            }
            batch.clear();
        }
        if last_prune.elapsed() > PRUNE_EVERY {
            last_prune = Instant::now();
            let min_start = wisp_core::time::now_ms() - settings.max_age.as_millis() as i64;
            if let Err(e) = store.prune_activations(settings.max_records, min_start) {
                tracing::error!(error = %e, "pruning activation records failed");
            }
        }
        if let Some(ack) = flushed.take() {
            let _ = ack.send(());
        }
        if let Some(ack) = stop.take() {
            let _ = ack.send(());
            break;
        }
    }
    tracing::debug!("activation recorder flushed and stopped");
}
