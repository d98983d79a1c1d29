//! One semaphore per principal, for limits that hold for each principal on its own
//! (running queries, planning threads).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// Past this many principals with idle semaphores, idle ones are forgotten.
const PRINCIPALS_KEPT: usize = 1024;

/// Semaphores of `permits` permits each, by principal fingerprint, made on first use.
#[derive(Debug)]
pub(crate) struct PerPrincipal {
    permits: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PerPrincipal {
    /// Semaphores of `permits` permits (at least one).
    pub(crate) fn new(permits: usize) -> Self {
        Self {
            permits: permits.max(1),
            semaphores: Mutex::default(),
        }
    }

    /// The permits each principal has.
    pub(crate) fn permits(&self) -> usize {
        self.permits
    }

    /// The semaphore of the principal `who`.
    pub(crate) fn of(&self, who: &str) -> Arc<Semaphore> {
        let mut map = self.semaphores.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > PRINCIPALS_KEPT {
            // Only this map holds an idle principal's semaphore.
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(
            map.entry(who.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits))),
        )
    }
}
