//! What a live instance holds of its node's capacity.
//!
//! The engine admits a run only with a [`Lease`]: a slot among its
//! namespace's and the node's instances and its memory limit out of the
//! node's memory budget. The lease stays with the instance (or process)
//! for as long as it lives, running or idle and kept warm for the next
//! request, and is given back when the instance is dropped. So the node's
//! limits count what is really held, and an executor that keeps an idle
//! instance keeps its share of the node too, until the engine evicts it to
//! make room.

use std::any::Any;

/// A share of the node's capacity; dropping it gives the share back.
/// Opaque to executors: they keep it with the instance it was given for.
pub struct Lease(#[allow(dead_code)] Box<dyn Any + Send + Sync>);

impl Lease {
    /// A lease holding `held` (the engine's permits) until dropped.
    pub fn new(held: impl Any + Send + Sync) -> Self {
        Self(Box::new(held))
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// Where a run takes place: a new instance made under a fresh lease, or a
/// warm one (`W`, holding its own lease) that the executor kept.
#[derive(Debug)]
pub enum Seat<W> {
    Fresh(Lease),
    Warm(W),
}
