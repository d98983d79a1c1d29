//! Server-side handles: what a ticket or a prepared-statement handle stands for.
//!
//! A handle is 16 random bytes: opaque to the client, unguessable, and carrying no SQL.
//! Entries expire after a time-to-live and the store holds a bounded number of them;
//! when full, expired entries are swept and, if still full, the oldest is evicted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Result};

/// Length of a handle in bytes.
pub const HANDLE_LEN: usize = 16;

type Handle = [u8; HANDLE_LEN];

#[derive(Debug)]
struct Entry<T> {
    value: T,
    touched: Instant,
}

/// A bounded, expiring map from opaque handles to values.
#[derive(Debug)]
pub struct HandleStore<T> {
    what: &'static str,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Handle, Entry<T>>>,
}

impl<T: Clone> HandleStore<T> {
    /// A store of `what` (used in error messages) with the given limits.
    pub fn new(what: &'static str, ttl: Duration, capacity: usize) -> Self {
        Self {
            what,
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `value` under a new random handle.
    pub fn insert(&self, value: T) -> Bytes {
        let handle: Handle = *uuid::Uuid::new_v4().as_bytes();
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, e| now.duration_since(e.touched) < self.ttl);
        }
        if entries.len() >= self.capacity
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, _)| *k)
        {
            entries.remove(&oldest);
        }
        entries.insert(
            handle,
            Entry {
                value,
                touched: now,
            },
        );
        Bytes::copy_from_slice(&handle)
    }

    /// The value behind `handle`, refreshing its time-to-live.
    pub fn get(&self, handle: &[u8]) -> Result<T> {
        let key = self.key(handle)?;
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get_mut(&key) {
            Some(entry) if now.duration_since(entry.touched) < self.ttl => {
                entry.touched = now;
                Ok(entry.value.clone())
            }
            Some(_) => {
                entries.remove(&key);
                Err(self.unknown())
            }
            None => Err(self.unknown()),
        }
    }

    /// Replaces the value behind an existing `handle`.
    pub fn update(&self, handle: &[u8], value: T) -> Result<()> {
        let key = self.key(handle)?;
        let mut entries = self.lock();
        match entries.get_mut(&key) {
            Some(entry) => {
                entry.value = value;
                entry.touched = Instant::now();
                Ok(())
            }
            None => Err(self.unknown()),
        }
    }

    /// Forgets `handle`; returns whether it existed.
    pub fn remove(&self, handle: &[u8]) -> Result<bool> {
        let key = self.key(handle)?;
        Ok(self.lock().remove(&key).is_some())
    }

    /// Number of live entries (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(&self, handle: &[u8]) -> Result<Handle> {
        handle
            .try_into()
            .map_err(|_| Error::InvalidArgument(format!("malformed {} handle", self.what)))
    }

    fn unknown(&self) -> Error {
        Error::UnknownHandle(format!(
            "{} handle is unknown or expired; plan the statement again",
            self.what
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Handle, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_opaque_and_expire() {
        let store = HandleStore::new("ticket", Duration::from_millis(50), 10);
        let h = store.insert(7);
        assert_eq!(h.len(), HANDLE_LEN);
        assert_eq!(store.get(&h).unwrap(), 7);
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(store.get(&h), Err(Error::UnknownHandle(_))));
        assert!(matches!(
            store.get(b"short"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let store = HandleStore::new("ticket", Duration::from_secs(60), 2);
        let a = store.insert(1);
        let b = store.insert(2);
        let c = store.insert(3);
        assert_eq!(store.len(), 2);
        assert!(store.get(&a).is_err());
        assert_eq!(store.get(&b).unwrap(), 2);
        assert_eq!(store.get(&c).unwrap(), 3);
    }
}
