//! Batched activation recording: the request path hands records to a
//! bounded channel (never blocking; a full channel drops and counts), and one
//! task writes them in one transaction per batch window. Retention runs on
//! the same task.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
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

const BATCH_MAX: usize = 2048;
const QUEUE: usize = 65_536;

pub struct Recorder {
    tx: mpsc::Sender<Activation>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    pub fn start(
        store: Arc<dyn ActivationStore>,
        settings: RetentionSettings,
        metrics: Arc<Metrics>,
    ) -> (Self, RecorderHandle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(rx, stop_rx, store, settings));
        (
            Self { tx, metrics },
            RecorderHandle {
                stop: stop_tx,
                task,
            },
        )
    }

    pub fn record(&self, a: Activation) {
        if self.tx.try_send(a).is_err() {
            self.metrics.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Stops the recorder after writing everything it was given.
pub struct RecorderHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RecorderHandle {
    pub async fn flush_and_stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(
    mut rx: mpsc::Receiver<Activation>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    store: Arc<dyn ActivationStore>,
    settings: RetentionSettings,
) {
    let mut last_prune = tokio::time::Instant::now();
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH_MAX) => if n == 0 { break },
                _ = &mut stop => {
                    stopping = true;
                    rx.close();
                    continue;
                }
            }
        } else if rx.recv_many(&mut batch, BATCH_MAX).await == 0 {
            break; // closed and drained
        }
        // Let the window fill up, unless the batch is full already.
        if batch.len() < BATCH_MAX && !stopping {
            let deadline = tokio::time::Instant::now() + settings.batch_window;
            while batch.len() < BATCH_MAX {
                let room = BATCH_MAX - batch.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let to_write = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_MAX));
        let s = store.clone();
        let prune = last_prune.elapsed() > Duration::from_secs(30);
        if prune {
            last_prune = tokio::time::Instant::now();
        }
        let settings = settings.clone();
        let res = tokio::task::spawn_blocking(move || {
            s.insert_activations(&to_write)?;
            if prune {
                let min_start = wisp_core::time::now_ms() - settings.max_age.as_millis() as i64;
                s.prune_activations(settings.max_records, min_start)?;
            }
            Ok::<_, wisp_core::StoreError>(())
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "writing activation records failed"),
            Err(e) => tracing::error!(error = %e, "activation writer panicked"),
        }
    }
    tracing::debug!("activation recorder flushed and stopped");
}
