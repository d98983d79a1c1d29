//! What this process keeps of the handles it gave out: the plan behind a ticket, the
//! prepared statement behind its handle, so that a handle redeemed where it was issued
//! needs no planning again.
//!
//! Entries are named by the 16 random bytes of id a sealed handle carries
//! ([`super::sealed`]); the handle itself is what any replica can open, so an entry
//! lost here (evicted, expired, or held by another replica) only costs planning again.
//! An entry is found only for the principal that made it, within its time-to-live; any
//! failure, whether unknown, expired or another principal's, looks the same to the
//! caller. The store holds a bounded number of entries, and each principal a bounded
//! share of them: each insert drops the expired ones; a principal at its share then
//! loses its own least recently used handle, and a full store takes the least recently
//! used handle of the principal holding the most, so that one principal's handles never
//! push out another's while it holds more than they do. Entries are also indexed by
//! when they were last used, overall and per principal, so each operation costs a
//! logarithm of the entries, never a scan of them under the lock (a full store scans
//! its principals once to find the largest holder).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Result};

/// Length of an entry's id in bytes.
pub(super) const ID_LEN: usize = 16;

/// An entry's id.
pub(super) type Id = [u8; ID_LEN];

#[derive(Debug)]
struct Entry<T> {
    owner: Arc<str>,
    value: T,
    touched: Instant,
}

/// The entries, and the same ids ordered by when they were last used, overall and for
/// each owner.
#[derive(Debug)]
struct Entries<T> {
    by_id: HashMap<Id, Entry<T>>,
    by_use: BTreeSet<(Instant, Id)>,
    by_owner: HashMap<Arc<str>, BTreeSet<(Instant, Id)>>,
}

impl<T> Entries<T> {
    fn new() -> Self {
        Self {
            by_id: HashMap::new(),
            by_use: BTreeSet::new(),
            by_owner: HashMap::new(),
        }
    }

    fn insert(&mut self, id: Id, owner: Arc<str>, value: T, now: Instant) {
        self.by_use.insert((now, id));
        self.by_owner
            .entry(Arc::clone(&owner))
            .or_default()
            .insert((now, id));
        self.by_id.insert(
            id,
            Entry {
                owner,
                value,
                touched: now,
            },
        );
    }

    fn remove(&mut self, id: &Id) -> Option<Entry<T>> {
        let entry = self.by_id.remove(id)?;
        self.by_use.remove(&(entry.touched, *id));
        self.forget_use_of_owner(&entry.owner, entry.touched, id);
        Some(entry)
    }

    fn forget_use_of_owner(&mut self, owner: &Arc<str>, touched: Instant, id: &Id) {
        if let Some(uses) = self.by_owner.get_mut(owner) {
            uses.remove(&(touched, *id));
            if uses.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    /// Marks the entry `id` as used at `now`.
    fn touch(&mut self, id: &Id, now: Instant) {
        if let Some(entry) = self.by_id.get_mut(id) {
            let before = entry.touched;
            entry.touched = now;
            self.by_use.remove(&(before, *id));
            self.by_use.insert((now, *id));
            if let Some(uses) = self.by_owner.get_mut(&entry.owner) {
                uses.remove(&(before, *id));
                uses.insert((now, *id));
            }
        }
    }

    /// How many entries `owner` holds.
    fn held_by(&self, owner: &str) -> usize {
        self.by_owner.get(owner).map_or(0, BTreeSet::len)
    }

    /// Removes the least recently used entry of `owner`, and returns it.
    fn evict_oldest_of(&mut self, owner: &str) -> Option<Entry<T>> {
        let &(_, id) = self.by_owner.get(owner)?.first()?;
        self.remove(&id)
    }

    /// Removes the least recently used entry of the owner holding the most entries.
    fn evict_from_largest_holder(&mut self) -> Option<Entry<T>> {
        let largest = self
            .by_owner
            .iter()
            .max_by_key(|(_, uses)| uses.len())
            .map(|(owner, _)| Arc::clone(owner))?;
        self.evict_oldest_of(&largest)
    }

    /// Removes the entries last used `ttl` or longer before `now`, and returns them, so
    /// that the caller drops them (and the plans they hold) after releasing the lock.
    fn take_expired(&mut self, now: Instant, ttl: Duration) -> Vec<Entry<T>> {
        let mut expired = Vec::new();
        while let Some(&(touched, id)) = self.by_use.first() {
            if now.duration_since(touched) < ttl {
                break;
            }
            expired.extend(self.remove(&id));
        }
        expired
    }
}

/// A bounded, expiring, principal-bound map from handle ids to values.
pub struct HandleStore<T> {
    what: &'static str,
    ttl: Duration,
    capacity: usize,
    per_owner: usize,
    entries: Mutex<Entries<T>>,
}

impl<T> std::fmt::Debug for HandleStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleStore")
            .field("what", &self.what)
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("per_owner", &self.per_owner)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> HandleStore<T> {
    /// A store of `what` (used in error messages) holding at most `capacity` entries,
    /// and at most `per_owner` of them for one owner.
    pub fn new(what: &'static str, ttl: Duration, capacity: usize, per_owner: usize) -> Self {
        Self {
            what,
            ttl,
            capacity: capacity.max(1),
            per_owner: per_owner.clamp(1, capacity.max(1)),
            entries: Mutex::new(Entries::new()),
        }
    }

    /// Stores `value` for `owner` under a new id.
    pub fn insert(&self, owner: &str, value: T) -> Bytes {
        self.insert_at(owner, value, Instant::now())
    }

    fn insert_at(&self, owner: &str, value: T, now: Instant) -> Bytes {
        let mut id: Id = [0u8; ID_LEN];
        id.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        self.put_at(id, owner, value, now);
        Bytes::copy_from_slice(&id)
    }

    /// Stores `value` for `owner` under `id` (a handle opened here that another
    /// process issued), replacing what `id` held.
    pub fn put(&self, id: Id, owner: &str, value: T) {
        self.put_at(id, owner, value, Instant::now());
    }

    fn put_at(&self, id: Id, owner: &str, value: T, now: Instant) {
        let _freed_unlocked = {
            let mut entries = self.lock();
            let mut freed = entries.take_expired(now, self.ttl);
            freed.extend(entries.remove(&id));
            if entries.held_by(owner) >= self.per_owner {
                freed.extend(entries.evict_oldest_of(owner));
            } else if entries.by_id.len() >= self.capacity {
                freed.extend(entries.evict_from_largest_holder());
            }
            entries.insert(id, Arc::from(owner), value, now);
            freed
        };
    }

    /// The value behind `handle` for `owner`, refreshing its time-to-live.
    pub fn get(&self, handle: &[u8], owner: &str) -> Result<T> {
        self.get_at(handle, owner, Instant::now())
    }

    fn get_at(&self, handle: &[u8], owner: &str, now: Instant) -> Result<T> {
        let id = self.verify(handle)?;
        let mut entries = self.lock();
        let (live, value) = match entries.by_id.get(&id) {
            Some(entry) if &*entry.owner == owner => (
                now.duration_since(entry.touched) < self.ttl,
                entry.value.clone(),
            ),
            _ => return Err(self.unknown()),
        };
        if live {
            entries.touch(&id, now);
            Ok(value)
        } else {
            entries.remove(&id);
            Err(self.unknown())
        }
    }

    /// Replaces the value behind an existing `handle` of `owner`.
    pub fn update(&self, handle: &[u8], owner: &str, value: T) -> Result<()> {
        self.update_at(handle, owner, value, Instant::now())
    }

    fn update_at(&self, handle: &[u8], owner: &str, value: T, now: Instant) -> Result<()> {
        let id = self.verify(handle)?;
        let mut entries = self.lock();
        match entries.by_id.get_mut(&id) {
            Some(entry) if &*entry.owner == owner => entry.value = value,
            _ => return Err(self.unknown()),
        }
        entries.touch(&id, now);
        Ok(())
    }

    /// Forgets `handle` of `owner`; returns whether it existed.
    pub fn remove(&self, handle: &[u8], owner: &str) -> Result<bool> {
        let id = self.verify(handle)?;
        let mut entries = self.lock();
        if entries.by_id.get(&id).is_some_and(|e| &*e.owner == owner) {
            entries.remove(&id);
            return Ok(true);
        }
        Ok(false)
    }

    /// Drops the entries unused for their time-to-live; returns how many. Inserts do
    /// this too; calling it on a timer frees them when no insert comes.
    pub fn drop_expired(&self) -> usize {
        self.drop_expired_at(Instant::now())
    }

    fn drop_expired_at(&self, now: Instant) -> usize {
        let expired = self.lock().take_expired(now, self.ttl);
        expired.len()
    }

    /// Number of entries (expired ones included until dropped).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id `handle` holds; whose it is, the entry says.
    fn verify(&self, handle: &[u8]) -> Result<Id> {
        handle.try_into().map_err(|_| self.unknown())
    }

    pub(super) fn unknown(&self) -> Error {
        Error::unknown_handle(format!(
            "{} handle is unknown or expired; plan the statement again",
            self.what
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_opaque_bound_and_expire() {
        let t = Instant::now();
        let store = HandleStore::new("ticket", Duration::from_millis(50), 10, 10);
        let h = store.insert_at("iss|ann", 7, t);
        assert_eq!(h.len(), ID_LEN);
        assert_eq!(store.get_at(&h, "iss|ann", at(t, 10)).unwrap(), 7);
        assert!(
            store
                .get(&h, "iss|bob")
                .is_err_and(|e| e.is_unknown_handle())
        );
        let mut forged = h.to_vec();
        forged[ID_LEN - 1] ^= 1;
        assert!(
            store
                .get(&forged, "iss|ann")
                .is_err_and(|e| e.is_unknown_handle())
        );
        assert!(
            store
                .get(b"short", "iss|ann")
                .is_err_and(|e| e.is_unknown_handle())
        );
        assert!(
            store
                .get_at(&h, "iss|ann", at(t, 80))
                .is_err_and(|e| e.is_unknown_handle())
        );
    }

    /// `start` plus `ms` milliseconds: tests run on a clock of their own.
    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn capacity_evicts_the_least_recently_used() {
        let t = Instant::now();
        let store = HandleStore::new("ticket", Duration::from_secs(60), 2, 2);
        let a = store.insert_at("o", 1, at(t, 1));
        let b = store.insert_at("o", 2, at(t, 2));
        let c = store.insert_at("o", 3, at(t, 3));
        assert_eq!(store.len(), 2);
        assert!(store.get_at(&a, "o", at(t, 4)).is_err());
        assert_eq!(store.get_at(&b, "o", at(t, 5)).unwrap(), 2);
        // `b` was used after `c`: a new entry evicts `c`.
        let d = store.insert_at("o", 4, at(t, 6));
        assert!(store.get_at(&c, "o", at(t, 7)).is_err());
        assert_eq!(store.get_at(&b, "o", at(t, 8)).unwrap(), 2);
        assert_eq!(store.get_at(&d, "o", at(t, 9)).unwrap(), 4);
        // An update is a use: `d` is now the older one.
        store.update_at(&b, "o", 5, at(t, 10)).unwrap();
        let e = store.insert_at("o", 6, at(t, 11));
        assert!(store.get_at(&d, "o", at(t, 12)).is_err());
        assert_eq!(store.get_at(&b, "o", at(t, 13)).unwrap(), 5);
        assert!(store.remove(&b, "o").unwrap());
        assert!(!store.remove(&b, "o").unwrap());
        assert_eq!(store.len(), 1);
        assert_eq!(store.get_at(&e, "o", at(t, 14)).unwrap(), 6);
    }

    #[test]
    fn inserts_drop_expired_entries_before_the_store_is_full() {
        let t = Instant::now();
        let store = HandleStore::new("ticket", Duration::from_millis(1_000), 1_000, 1_000);
        for i in 0..10 {
            store.insert_at("o", i, at(t, i as u64));
        }
        let kept = store.insert_at("o", 10, at(t, 10));
        assert_eq!(
            store.get_at(&kept, "o", at(t, 600)).unwrap(),
            10,
            "used, so kept longer"
        );
        let last = store.insert_at("o", 11, at(t, 1_200));
        assert_eq!(
            store.len(),
            2,
            "the ten unused entries expired and were dropped"
        );
        assert_eq!(store.get_at(&kept, "o", at(t, 1_300)).unwrap(), 10);
        assert_eq!(store.get_at(&last, "o", at(t, 1_300)).unwrap(), 11);
        assert!(
            store.get_at(&last, "o", at(t, 2_400)).is_err(),
            "unused for its time-to-live"
        );
        assert_eq!(store.len(), 1, "an expired entry is dropped when asked for");
        assert_eq!(
            store.drop_expired_at(at(t, 2_200)),
            0,
            "kept was used at 1,300"
        );
        assert_eq!(store.drop_expired_at(at(t, 2_300)), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn a_principal_over_its_share_evicts_only_its_own_handles() {
        let t = Instant::now();
        let store = HandleStore::new("ticket", Duration::from_secs(60), 6, 3);
        let others: Vec<_> = (0..2)
            .map(|i| store.insert_at("other", i, at(t, i)))
            .collect();
        let mine: Vec<_> = (0..10)
            .map(|i| store.insert_at("greedy", 100 + i, at(t, 10 + i)))
            .collect();
        assert_eq!(store.len(), 5, "2 of the other's and 3 of the greedy one's");
        for (i, h) in others.iter().enumerate() {
            assert_eq!(store.get_at(h, "other", at(t, 30)).unwrap(), i as u64);
        }
        for h in &mine[..7] {
            assert!(store.get_at(h, "greedy", at(t, 31)).is_err());
        }
        for h in &mine[7..] {
            assert!(store.get_at(h, "greedy", at(t, 32)).is_ok());
        }
    }

    #[test]
    fn a_full_store_takes_from_the_largest_holder() {
        let t = Instant::now();
        let store = HandleStore::new("ticket", Duration::from_secs(60), 4, 3);
        let a = store.insert_at("small", 1, at(t, 1));
        let big: Vec<_> = (0..3)
            .map(|i| store.insert_at("big", i, at(t, 2 + i)))
            .collect();
        // Full: a third principal's insert takes the big holder's oldest, not `a`
        // (the oldest overall).
        let c = store.insert_at("third", 9, at(t, 10));
        assert_eq!(store.len(), 4);
        assert_eq!(store.get_at(&a, "small", at(t, 11)).unwrap(), 1);
        assert_eq!(store.get_at(&c, "third", at(t, 12)).unwrap(), 9);
        assert!(store.get_at(&big[0], "big", at(t, 13)).is_err());
        assert!(store.get_at(&big[2], "big", at(t, 14)).is_ok());
        assert!(store.remove(&a, "small").unwrap());
        assert_eq!(
            store.lock().by_owner.len(),
            2,
            "an owner with nothing held is forgotten"
        );
    }
}
