//! [`SessionPublisher`]: the session factory in force, published by whoever loads the
//! mesh (the reloader) and read by whoever serves or measures it (the engine, the
//! quality agent), without either knowing the other.

use std::sync::Arc;

use tokio::sync::watch;

use super::SessionFactory;

/// The session factory in force, and notice of each replacement. Cloning gives another
/// handle on the same channel. Requests in flight keep the factory they started with.
#[derive(Debug, Clone)]
pub struct SessionPublisher {
    sender: Arc<watch::Sender<Arc<SessionFactory>>>,
}

impl SessionPublisher {
    /// A channel whose first factory is `sessions`.
    pub fn new(sessions: SessionFactory) -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(Arc::new(sessions))),
        }
    }

    /// The factory in force.
    pub fn current(&self) -> Arc<SessionFactory> {
        Arc::clone(&self.sender.borrow())
    }

    /// Replaces the factory (a reloaded mesh); subscribers are told.
    pub fn publish(&self, sessions: SessionFactory) {
        self.sender.send_replace(Arc::new(sessions));
    }

    /// Notice of every replacement from now on. The receiver sees the channel closed
    /// once every publisher is dropped.
    pub fn subscribe(&self) -> watch::Receiver<Arc<SessionFactory>> {
        self.sender.subscribe()
    }

    /// A subscription that does not keep the channel open (for background work that
    /// must stop once the engine is gone).
    pub(crate) fn downgrade(&self) -> WeakSessionPublisher {
        WeakSessionPublisher {
            sender: Arc::downgrade(&self.sender),
        }
    }
}

/// A [`SessionPublisher`] that does not keep the channel alive.
#[derive(Debug, Clone)]
pub(crate) struct WeakSessionPublisher {
    sender: std::sync::Weak<watch::Sender<Arc<SessionFactory>>>,
}

impl WeakSessionPublisher {
    /// The publisher, while one is alive.
    pub(crate) fn upgrade(&self) -> Option<SessionPublisher> {
        self.sender
            .upgrade()
            .map(|sender| SessionPublisher { sender })
    }
}
