//! The API key: held where it cannot be printed, read from the environment or a file.

use std::{fmt, path::PathBuf, sync::Arc};

use http::HeaderValue;

/// An API key or inbound token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a secret; surrounding white space (a trailing newline in a file) is removed.
    pub fn new(s: &str) -> Option<Self> {
        let s = s.trim();
        (!s.is_empty()).then(|| Self(Arc::from(s)))
    }

    /// The secret itself, for comparisons and header building only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Bearer <key>` marked sensitive, so hyper's HPACK never indexes it and `Debug` hides it.
    pub fn bearer(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the key comes from. The config holds this, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `RACKNAP_API_KEY` (read once at start).
    Env(Secret),
    /// A file, re-read when it changes.
    File(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("sk_live_topsecret\n").unwrap();
        assert_eq!(s.expose(), "sk_live_topsecret");
        assert!(!format!("{s:?} {s}").contains("topsecret"));
        let h = s.bearer().unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("topsecret"));
    }

    #[test]
    fn empty_is_no_secret() {
        assert!(Secret::new("  \n").is_none());
    }
}

/// The key in force, shared by every request; re-read from its file when that changes.
#[derive(Clone, Debug)]
pub struct KeyStore {
    current: std::sync::Arc<parking_lot::RwLock<Secret>>,
    source: KeySource,
}

impl KeyStore {
    /// Load the key now from `source`.
    pub fn load(source: KeySource) -> std::io::Result<Self> {
        let key = match &source {
            KeySource::Env(s) => s.clone(),
            KeySource::File(path) => read_key_file(path)?,
        };
        Ok(Self { current: std::sync::Arc::new(parking_lot::RwLock::new(key)), source })
    }

    /// The key to send now.
    pub fn current(&self) -> Secret {
        self.current.read().clone()
    }

    /// Re-read a key file; `Ok(true)` when the key changed. An env key never changes.
    pub fn reload(&self) -> std::io::Result<bool> {
        let KeySource::File(path) = &self.source else { return Ok(false) };
        let key = read_key_file(path)?;
        let mut cur = self.current.write();
        let changed = *cur != key;
        *cur = key;
        Ok(changed)
    }

    /// Whether the key comes from a file (and so can rotate).
    pub fn is_file(&self) -> bool {
        matches!(self.source, KeySource::File(_))
    }
}

fn read_key_file(path: &std::path::Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path)?;
    Secret::new(&text).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("key file {} is empty", path.display()))
    })
}
