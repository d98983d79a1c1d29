//! The tokens callers presented, kept for a token exchange (RFC 8693) toward domain
//! nodes: the exchange needs the caller's own token as its subject token.
//!
//! Tokens stay in the gateway's auth layer. The engine, its sessions and plans see only
//! the principal a token was verified as; when a node call needs a token for that
//! principal, the exchange looks the principal's newest token up here. Two tokens that
//! verify as the same principal (issuer, subject, roles, attributes) name the same
//! caller, so either may stand for it. A token is dropped when it expires, and the
//! store is bounded: under pressure the tokens closest to expiry go first.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use meshgate_catalog::Principal;

/// Most callers whose tokens are kept at once (a JWT is at most a few KiB).
pub const MAX_PRESENTED: usize = 4096;

/// A caller's token: its text is never printed.
#[derive(Clone)]
pub(crate) struct PresentedToken {
    text: Arc<str>,
    expires_at: u64,
}

impl PresentedToken {
    /// The token as presented (to send to the identity provider, nowhere else).
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// When it expires (seconds since the Unix epoch).
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The newest unexpired token each recent caller of the listed issuers presented.
pub struct PresentedTokens {
    issuers: BTreeSet<String>,
    tokens: Mutex<HashMap<Principal, PresentedToken>>,
}

impl std::fmt::Debug for PresentedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Who called is nobody's business in a log line.
        f.debug_struct("PresentedTokens")
            .field("issuers", &self.issuers)
            .field("callers", &self.len())
            .finish()
    }
}

/// Seconds since the Unix epoch (0 on a clock before it: every token then looks
/// unexpired to this store, and the provider, which checks its own clock, decides).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PresentedTokens {
    /// An empty store, keeping the tokens of `issuers` only (the identity provider
    /// takes those alone: a token of another issuer is never sent to it).
    pub fn new(issuers: impl IntoIterator<Item = String>) -> Self {
        Self {
            issuers: issuers.into_iter().collect(),
            tokens: Mutex::default(),
        }
    }

    /// Whether tokens of `principal`'s issuer are kept (and may be exchanged).
    pub fn keeps(&self, principal: &Principal) -> bool {
        self.issuers.contains(&principal.issuer)
    }

    /// Keeps `token`, verified as `principal` and expiring at `expires_at`, in place of
    /// the one kept before (if its issuer is one of the store's).
    pub fn record(&self, principal: &Principal, token: &str, expires_at: u64) {
        let now = unix_now();
        if expires_at <= now || !self.keeps(principal) {
            return;
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_PRESENTED && !tokens.contains_key(principal) {
            tokens.retain(|_, t| t.expires_at > now);
            drop_soonest(&mut tokens, |t| t.expires_at);
        }
        tokens.insert(
            principal.clone(),
            PresentedToken {
                text: token.into(),
                expires_at,
            },
        );
    }

    /// The newest token `principal` presented, if it is still valid for `margin_secs`.
    pub(crate) fn get(&self, principal: &Principal, margin_secs: u64) -> Option<PresentedToken> {
        let now = unix_now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(principal) {
            Some(token) if token.expires_at > now.saturating_add(margin_secs) => {
                Some(token.clone())
            }
            Some(token) if token.expires_at <= now => {
                tokens.remove(principal);
                None
            }
            _ => None,
        }
    }

    /// How many callers' tokens are kept.
    pub fn len(&self) -> usize {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the eighth of `map`'s entries (at least one) that `until` says end soonest,
/// when it holds [`MAX_PRESENTED`] or more.
pub(crate) fn drop_soonest<K, V, T>(map: &mut HashMap<K, V>, until: impl Fn(&V) -> T)
where
    K: Eq + std::hash::Hash + Clone,
    T: Ord,
{
    if map.len() < MAX_PRESENTED {
        return;
    }
    let mut ends: Vec<(T, K)> = map.iter().map(|(k, v)| (until(v), k.clone())).collect();
    let cut = (ends.len() / 8).max(1);
    ends.select_nth_unstable_by(cut - 1, |a, b| a.0.cmp(&b.0));
    for (_, key) in ends.into_iter().take(cut) {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(subject: &str) -> Principal {
        Principal::new("https://idp", subject, ["analyst"])
    }

    fn store() -> PresentedTokens {
        PresentedTokens::new(["https://idp".to_string()])
    }

    #[test]
    fn the_newest_token_of_a_caller_is_kept() {
        let store = store();
        let now = unix_now();
        store.record(&caller("ana"), "first", now + 600);
        store.record(&caller("ana"), "newest", now + 60);
        assert_eq!(store.get(&caller("ana"), 0).unwrap().text(), "newest");
        assert!(store.get(&caller("ben"), 0).is_none());
        // Another role set is another principal.
        let other = Principal::new("https://idp", "ana", ["admin"]);
        assert!(store.get(&other, 0).is_none());
    }

    #[test]
    fn tokens_of_other_issuers_are_never_kept() {
        let store = store();
        let other = Principal::new("https://other-idp", "ana", ["analyst"]);
        store.record(&other, "theirs", unix_now() + 60);
        assert!(store.get(&other, 0).is_none());
        assert!(store.is_empty());
    }

    #[test]
    fn expired_tokens_and_tokens_about_to_expire_are_not_given() {
        let store = store();
        let now = unix_now();
        store.record(&caller("ana"), "gone", now.saturating_sub(1));
        assert!(store.get(&caller("ana"), 0).is_none());
        store.record(&caller("ana"), "soon", now + 5);
        assert!(store.get(&caller("ana"), 10).is_none());
        assert_eq!(store.get(&caller("ana"), 0).unwrap().text(), "soon");
    }

    #[test]
    fn the_store_stays_bounded_and_drops_the_tokens_closest_to_expiry() {
        let store = store();
        let now = unix_now();
        for i in 0..(MAX_PRESENTED as u64 + 100) {
            store.record(&caller(&format!("c{i}")), "t", now + 100 + i);
        }
        assert!(store.len() <= MAX_PRESENTED);
        assert!(store.get(&caller("c0"), 0).is_none(), "closest to expiry");
        let newest = format!("c{}", MAX_PRESENTED as u64 + 99);
        assert!(store.get(&caller(&newest), 0).is_some());
    }

    #[test]
    fn tokens_expiring_together_are_not_dropped_all_at_once() {
        let store = store();
        let expiry = unix_now() + 100;
        for i in 0..(MAX_PRESENTED + 10) {
            store.record(&caller(&format!("c{i}")), "t", expiry);
        }
        assert!(store.len() <= MAX_PRESENTED);
        assert!(store.len() > MAX_PRESENTED * 3 / 4, "{}", store.len());
    }

    #[test]
    fn a_token_is_never_printed() {
        let store = store();
        store.record(&caller("ana"), "secret.token.text", unix_now() + 60);
        let printed = format!("{store:?} {:?}", store.get(&caller("ana"), 0));
        assert!(!printed.contains("secret.token.text"), "{printed}");
        assert!(
            !printed.contains("ana"),
            "callers are not listed: {printed}"
        );
    }
}
