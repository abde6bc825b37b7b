//! Group commit for the durable queue: every change (new events, acks,
//! retries, dead letters, cron ticks) goes to one writer thread, which takes
//! everything waiting, applies it in one transaction with one fsync, and
//! then answers the senders. Under load many events share one commit; idle,
//! a single event is committed at once.

use crate::metrics::Dropped;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};
use wisp_core::{EventStore, QueueOp, QueueOpResult, StoreError};

/// Most operations applied in one transaction.
const BATCH_MAX: usize = 8192;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A batch at least this large means the queue is busy: linger next time.
const LINGER_FROM: usize = 16;
/// How long a busy writer waits for more work before it commits.
const LINGER: Duration = Duration::from_micros(300);

pub(crate) type OpResults = Vec<Result<QueueOpResult, StoreError>>;
type Reply = tokio::sync::oneshot::Sender<Result<OpResults, StoreError>>;

enum Msg {
    Ops(Vec<QueueOp>, Option<Reply>),
    Stop(Sender<()>),
}

/// The sending side of the queue writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: Sender<Msg>,
    /// Changes sent without waiting that could not be stored.
    pub(crate) dropped: Arc<Dropped>,
}

impl Writer {
    pub fn start(store: Arc<dyn EventStore>) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let dropped = Arc::new(Dropped::default());
        let d = dropped.clone();
        std::thread::Builder::new()
            .name("wisp-queue".into())
            .spawn(move || run(rx, store, d))?;
        Ok(Self { tx, dropped })
    }

    /// Applies `ops` durably and returns what each did. Errors: the batch
    /// could not be stored (`StoreError::Full` when the disk is full).
    pub async fn submit(&self, ops: Vec<QueueOp>) -> Result<OpResults, StoreError> {
        let stopped = || StoreError::Db("the queue writer has stopped".to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Ops(ops, Some(tx)))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Applies `op` without waiting for it (acks, retries, dead letters:
    /// losing one to a crash only means a delivery runs again).
    pub fn send(&self, op: QueueOp) {
        if self.tx.send(Msg::Ops(vec![op], None)).is_err() {
            tracing::warn!("queue writer stopped; an acknowledgement was not stored");
        }
    }

    /// Writes everything sent so far, then stops the thread.
    pub async fn flush_and_stop(&self) {
        let (ack_tx, ack_rx) = channel();
        let tx = self.tx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if tx.send(Msg::Stop(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        })
        .await;
    }
}

fn run(rx: Receiver<Msg>, store: Arc<dyn EventStore>, dropped: Arc<Dropped>) {
    let mut last_prune = Instant::now();
    let mut last_batch = 0;
    loop {
        let Ok(first) = rx.recv() else { break };
        let mut msgs = vec![first];
        let mut n = 0;
        // Under load (the last batch was not small), wait a little for more
        // work: fewer, larger commits cost far less CPU (each one is an
        // fsync). Sleep rather than wait on the channel, so that senders
        // meanwhile find no waiting receiver to wake. Idle, commit at once
        // so a lone event is not delayed.
        if last_batch >= LINGER_FROM {
            std::thread::sleep(LINGER);
        }
        while n < BATCH_MAX {
            let Ok(m) = rx.try_recv() else { break };
            if let Msg::Ops(ops, _) = &m {
                n += ops.len();
            }
            let stop = matches!(m, Msg::Stop(_));
            msgs.push(m);
            if stop {
                break;
            }
        }
        last_batch = n + 1;
        let mut all = Vec::new();
        let mut replies = Vec::new();
        let mut stop = None;
        for m in msgs {
            match m {
                Msg::Ops(ops, reply) => {
                    replies.push((ops.len(), reply));
                    all.extend(ops);
                }
                Msg::Stop(ack) => stop = Some(ack),
            }
        }
        if !all.is_empty() {
            match store.apply(&all) {
                Ok(results) => {
                    let mut it = results.into_iter();
                    for (len, reply) in replies {
                        let mine: OpResults = it.by_ref().take(len).collect();
                        match reply {
                            Some(r) => {
                                let _ = r.send(Ok(mine));
                            }
                            None => {
                                for e in mine.into_iter().filter_map(Result::err) {
                                    tracing::error!(error = %e, "queue update failed");
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, ops = all.len(), "writing to the queue failed");
                    for (len, reply) in replies {
                        match reply {
                            Some(r) => {
                                let again = if e.is_full() {
                                    StoreError::Full(e.to_string())
                                } else {
                                    StoreError::Db(e.to_string())
                                };
                                let _ = r.send(Err(again));
                            }
                            None => dropped.failed(&e, len),
                        }
                    }
                }
            }
        }
        if last_prune.elapsed() > PRUNE_EVERY {
            last_prune = Instant::now();
            if let Err(e) = store.prune_idempotency(wisp_core::time::now_ms()) {
                tracing::error!(error = %e, "pruning idempotency keys failed");
            }
        }
        if let Some(ack) = stop {
            let _ = ack.send(());
            break;
        }
    }
}
