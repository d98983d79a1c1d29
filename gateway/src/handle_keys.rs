//! [`HandleKeys`]: the keys that seal the handles the gateway gives out (tickets,
//! prepared-statement handles, session cookies), so that any replica holding the same
//! keys can open a handle another replica sealed.
//!
//! Keys come from `handles.keys_file` or `handles.keys_env`: one key per line, `<id>
//! <64 hex digits>` (32 bytes), `#` comments and blank lines ignored. The first key
//! seals; every key listed opens. To rotate without dropping handles in flight: add the
//! new key second on every replica (all open it), then move it first on every replica
//! (all seal with it), and remove the old one after the longest handle time-to-live
//! (`handles.session_ttl`). Without configured keys, a
//! process draws a key of its own at start: its handles open nowhere else, and not
//! after a restart.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of one key (AES-256-GCM).
pub const KEY_LEN: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Longest sealed handle opened: a statement (at most 256 KiB of SQL), its bound values
/// (at most 256 KiB) and the rest fit well within it; a longer one is refused before it
/// is copied or decrypted.
pub const MAX_HANDLE_LEN: usize = 1024 * 1024;
/// The envelope format's version (first byte of every sealed handle).
const FORMAT: u8 = 1;
/// Bytes of the AEAD tag at the end of every sealed handle.
const TAG_LEN: usize = 16;

/// What a handle is for; part of the authenticated data, so a handle of one kind does
/// not open as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HandlePurpose {
    /// A statement ticket (DoGet).
    Ticket = 1,
    /// A prepared-statement handle.
    PreparedStatement = 2,
    /// A Flight SQL session cookie.
    Session = 3,
    /// A portal sign-in cookie.
    PortalSession = 4,
    /// A portal OpenID Connect sign-in under way (state, nonce, PKCE verifier).
    PortalOidc = 5,
}

/// Why the handle keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HandleKeysError {
    /// The keys file cannot be read.
    #[error("handle keys file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The keys' environment variable is not set.
    #[error("handle keys: environment variable {0} is not set")]
    Env(String),
    /// A line is not `<id> <64 hex digits>`.
    #[error("handle keys, line {line}: {why} (expected `<id> <64 hex digits>`)")]
    Malformed {
        /// The line, from 1.
        line: usize,
        /// What is wrong (never the key).
        why: &'static str,
    },
    /// No key is listed.
    #[error("handle keys: no key is listed")]
    Empty,
    /// The system gave no randomness.
    #[error("no randomness for {0}")]
    NoRandomness(&'static str),
    /// A handle could not be sealed.
    #[error("a handle could not be sealed")]
    Sealing,
}

/// One key and its id.
struct NamedKey {
    id: String,
    key: LessSafeKey,
}

/// The keys that seal and open handles: the first seals, all open.
pub struct HandleKeys {
    keys: Vec<NamedKey>,
}

impl std::fmt::Debug for HandleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("HandleKeys").field("ids", &ids).finish()
    }
}

impl HandleKeys {
    /// A key of this process's own, drawn now.
    pub fn random() -> Result<Self, HandleKeysError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| HandleKeysError::NoRandomness("the handle key"))?;
        Ok(Self {
            keys: vec![named("process", &bytes)],
        })
    }

    /// The keys listed in `text` (see the module's documentation).
    pub fn parse(text: &str) -> Result<Self, HandleKeysError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |why| HandleKeysError::Malformed {
                line: index + 1,
                why,
            };
            let mut words = line.split_whitespace();
            let (Some(id), Some(hex_key), None) = (words.next(), words.next(), words.next()) else {
                return Err(malformed("not two words"));
            };
            if id.len() > MAX_KEY_ID_LEN
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(malformed(
                    "the id must be 1 to 32 letters, digits, '-' or '_'",
                ));
            }
            let mut bytes = [0u8; KEY_LEN];
            hex::decode_to_slice(hex_key, &mut bytes)
                .map_err(|_| malformed("the key must be 64 hex digits"))?;
            if keys.iter().any(|k: &NamedKey| k.id == id) {
                return Err(malformed("the id is listed twice"));
            }
            keys.push(named(id, &bytes));
        }
        if keys.is_empty() {
            return Err(HandleKeysError::Empty);
        }
        Ok(Self { keys })
    }

    /// The keys of `file`.
    pub fn from_file(file: &Path) -> Result<Self, HandleKeysError> {
        let text = std::fs::read_to_string(file).map_err(|source| HandleKeysError::File {
            path: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The keys in the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, HandleKeysError> {
        let text = std::env::var(var).map_err(|_| HandleKeysError::Env(var.to_string()))?;
        Self::parse(&text)
    }

    /// A new keys file's text: one fresh key named `id`.
    pub fn generate(id: &str) -> Result<String, HandleKeysError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| HandleKeysError::NoRandomness("a handle key"))?;
        Ok(format!("{id} {}\n", hex::encode(bytes)))
    }

    /// The id of the key that seals.
    pub fn sealing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// `plaintext`, sealed for `purpose` with the first key: readable and alterable by
    /// no one without a key, and opened only as the same purpose. Fails (rather than
    /// risk a repeated nonce) when the system gives no randomness.
    pub fn seal(&self, purpose: HandlePurpose, plaintext: &[u8]) -> Result<Bytes, HandleKeysError> {
        let key = &self.keys[0];
        let header = header(purpose, &key.id);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| HandleKeysError::NoRandomness("a handle's nonce"))?;
        let mut sealed = BytesMut::with_capacity(header.len() + NONCE_LEN + plaintext.len() + 16);
        sealed.put_slice(&header);
        sealed.put_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&header[..]),
                &mut body,
            )
            .map_err(|_| HandleKeysError::Sealing)?;
        sealed.put_slice(&body);
        Ok(sealed.freeze())
    }

    /// The plaintext of `sealed`, if one of the keys sealed it for `purpose` and it is
    /// unaltered; `None` otherwise (whatever the reason: the caller cannot tell).
    pub fn open(&self, purpose: HandlePurpose, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() > MAX_HANDLE_LEN {
            return None;
        }
        let (&format, rest) = sealed.split_first()?;
        let (&kind, rest) = rest.split_first()?;
        let (&id_len, rest) = rest.split_first()?;
        if format != FORMAT || kind != purpose as u8 || usize::from(id_len) > MAX_KEY_ID_LEN {
            return None;
        }
        let id = rest.get(..usize::from(id_len))?;
        let key = self.keys.iter().find(|k| k.id.as_bytes() == id)?;
        let rest = &rest[id.len()..];
        if rest.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let header = &sealed[..3 + id.len()];
        let mut body = body.to_vec();
        let plaintext = key
            .key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(header),
                &mut body,
            )
            .ok()?;
        Some(plaintext.to_vec())
    }
}

fn named(id: &str, bytes: &[u8; KEY_LEN]) -> NamedKey {
    // A 32-byte key is always a valid AES-256 key.
    let unbound = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
    NamedKey {
        id: id.to_string(),
        key: LessSafeKey::new(unbound),
    }
}

/// The authenticated, unencrypted start of a sealed handle.
fn header(purpose: HandlePurpose, id: &str) -> Vec<u8> {
    let mut header = Vec::with_capacity(3 + id.len());
    header.push(FORMAT);
    header.push(purpose as u8);
    // Ids are at most MAX_KEY_ID_LEN bytes (parse and `random` check or fix them).
    header.push(id.len() as u8);
    header.extend_from_slice(id.as_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "old 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const NEW: &str = "new ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn a_sealed_handle_opens_only_as_itself() {
        let keys = HandleKeys::parse(OLD).unwrap();
        let sealed = keys.seal(HandlePurpose::Ticket, b"the statement").unwrap();
        assert_eq!(
            keys.open(HandlePurpose::Ticket, &sealed).as_deref(),
            Some(&b"the statement"[..])
        );
        assert_eq!(keys.open(HandlePurpose::Session, &sealed), None);
        assert!(
            !sealed.windows(3).any(|w| w == b"the"),
            "the plaintext shows"
        );
        for i in 0..sealed.len() {
            let mut altered = sealed.to_vec();
            altered[i] ^= 1;
            assert_eq!(keys.open(HandlePurpose::Ticket, &altered), None, "byte {i}");
        }
        assert_eq!(
            keys.open(HandlePurpose::Ticket, &sealed[..sealed.len() - 1]),
            None
        );
        assert_eq!(keys.open(HandlePurpose::Ticket, b""), None);
    }

    #[test]
    fn rotation_keeps_old_handles_open_and_seals_with_the_new_key() {
        let before = HandleKeys::parse(OLD).unwrap();
        let rotated = HandleKeys::parse(&format!("# rotated\n{NEW}\n\n{OLD}\n")).unwrap();
        let old_handle = before.seal(HandlePurpose::PreparedStatement, b"x").unwrap();
        assert!(
            rotated
                .open(HandlePurpose::PreparedStatement, &old_handle)
                .is_some()
        );
        assert_eq!(rotated.sealing_key_id(), "new");
        let new_handle = rotated
            .seal(HandlePurpose::PreparedStatement, b"y")
            .unwrap();
        assert_eq!(
            before.open(HandlePurpose::PreparedStatement, &new_handle),
            None
        );
        let other = HandleKeys::random().unwrap();
        assert_eq!(
            other.open(HandlePurpose::PreparedStatement, &old_handle),
            None
        );
    }

    #[test]
    fn malformed_key_lists_are_refused_without_showing_keys() {
        for (text, line) in [
            ("k1 0011", 1),
            ("\nk1", 2),
            (
                "k! 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                1,
            ),
            (&format!("{OLD}\n{OLD}") as &str, 2),
        ] {
            match HandleKeys::parse(text) {
                Err(HandleKeysError::Malformed { line: at, .. }) => assert_eq!(at, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            HandleKeys::parse("# none"),
            Err(HandleKeysError::Empty)
        ));
        let generated = HandleKeys::generate("k2026").unwrap();
        assert_eq!(
            HandleKeys::parse(&generated).unwrap().sealing_key_id(),
            "k2026"
        );
    }
}
