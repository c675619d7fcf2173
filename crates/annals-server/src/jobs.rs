//! Where a node's jobs run. With the store in PostgreSQL several nodes serve one store, but
//! projections, relays and persistent-subscription groups run on one node at a time, the
//! holder of the jobs lease. A [`JobSlot`] is what the APIs see of one kind of job: running
//! here, running on another node (which they name to the client), or not run by this server at
//! all. The binary fills and empties the slots as the lease comes and goes.

use std::sync::Arc;

use parking_lot::RwLock;

/// One kind of job as this node sees it.
#[derive(Debug)]
pub enum Held<T> {
    /// This server does not run this kind of job.
    Off,
    /// It runs here.
    Here(Arc<T>),
    /// Another node holds the jobs lease: its advertised address, when known.
    Elsewhere(Option<String>),
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        match self {
            Held::Off => Held::Off,
            Held::Here(t) => Held::Here(Arc::clone(t)),
            Held::Elsewhere(at) => Held::Elsewhere(at.clone()),
        }
    }
}

/// A kind of job the APIs reach through; cheap to clone, all clones see one state.
#[derive(Debug)]
pub struct JobSlot<T> {
    held: Arc<RwLock<Held<T>>>,
}

impl<T> Clone for JobSlot<T> {
    fn clone(&self) -> Self {
        Self {
            held: Arc::clone(&self.held),
        }
    }
}

impl<T> Default for JobSlot<T> {
    fn default() -> Self {
        Self::new(Held::Off)
    }
}

impl<T> JobSlot<T> {
    pub fn new(held: Held<T>) -> Self {
        Self {
            held: Arc::new(RwLock::new(held)),
        }
    }

    /// A slot whose jobs run here for good (a single node).
    pub fn here(jobs: Arc<T>) -> Self {
        Self::new(Held::Here(jobs))
    }

    /// The jobs, when they run here.
    pub fn get(&self) -> Option<Arc<T>> {
        match &*self.held.read() {
            Held::Here(t) => Some(Arc::clone(t)),
            Held::Off | Held::Elsewhere(_) => None,
        }
    }

    /// Where the jobs run now.
    pub fn held(&self) -> Held<T> {
        self.held.read().clone()
    }

    /// Moves the jobs; the previous state, for the caller to shut down what ran here.
    pub fn set(&self, held: Held<T>) -> Held<T> {
        std::mem::replace(&mut *self.held.write(), held)
    }
}
