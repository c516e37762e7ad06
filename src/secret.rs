//! The API key: held where it cannot be printed, read from the environment or a file.

use std::{fmt, path::PathBuf, sync::Arc};

use http::HeaderValue;

/// An API key or inbound token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a secret; surrounding white space (a trailing newline in a file) and a leading
    /// byte-order mark are removed. `None` when [`Secret::parse`] refuses it.
    pub fn new(s: &str) -> Option<Self> {
        Self::parse(s).ok()
    }

    /// Like [`Secret::new`], saying why a value is refused: empty, or holding anything but
    /// visible ASCII (a second line, a space, a control character) — such a key could never be
    /// sent in a header, and accepting it would fail every request later instead of now.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim_start_matches('\u{feff}').trim();
        if s.is_empty() {
            return Err("is empty");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("holds a space, a line break, a control or a non-ASCII character");
        }
        Ok(Self(Arc::from(s)))
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

    #[test]
    fn keys_that_cannot_be_a_header_are_refused() {
        for bad in ["abc\ndef", "abc def", "sk_live\u{1}x", "sk_live_ключ", "a\r\nInjected: 1"] {
            assert!(Secret::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Secret::parse("\u{feff}sk_live_abc\r\n").unwrap().expose(), "sk_live_abc");
    }

    #[test]
    fn a_rotation_to_an_unusable_key_keeps_the_current_one() {
        let path = std::env::temp_dir().join(format!("racknap-key-{}", std::process::id()));
        std::fs::write(&path, "sk_live_good\n").unwrap();
        let store = KeyStore::load(KeySource::File(path.clone())).unwrap();
        std::fs::write(&path, "sk_live_good\nsecond line\n").unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains("line break") && !err.contains("sk_live"), "{err}");
        assert_eq!(store.current().expose(), "sk_live_good");
        std::fs::remove_file(&path).unwrap();
    }
}

/// The key in force, shared by every request; re-read from its file when that changes.
#[derive(Clone, Debug)]
pub struct KeyStore {
    current: std::sync::Arc<parking_lot::RwLock<Secret>>,
    source: KeySource,
    seen: std::sync::Arc<parking_lot::Mutex<Option<Fingerprint>>>,
}

/// What identifies one version of the key file without reading it: modification time, length
/// and inode (a Kubernetes Secret update swaps a symlink, which changes the inode).
type Fingerprint = (Option<std::time::SystemTime>, u64, u64);

fn fingerprint(path: &std::path::Path) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.modified().ok(), m.len(), m.ino()))
}

impl KeyStore {
    /// Load the key now from `source`.
    pub fn load(source: KeySource) -> std::io::Result<Self> {
        let key = match &source {
            KeySource::Env(s) => s.clone(),
            KeySource::File(path) => read_key_file(path)?,
        };
        let seen = match &source {
            KeySource::File(path) => fingerprint(path).ok(),
            KeySource::Env(_) => None,
        };
        Ok(Self {
            current: std::sync::Arc::new(parking_lot::RwLock::new(key)),
            source,
            seen: std::sync::Arc::new(parking_lot::Mutex::new(seen)),
        })
    }

    /// The key to send now.
    pub fn current(&self) -> Secret {
        self.current.read().clone()
    }

    /// Re-read a key file; `Ok(true)` when the key changed. An env key never changes.
    pub fn reload(&self) -> std::io::Result<bool> {
        let KeySource::File(path) = &self.source else { return Ok(false) };
        let before = fingerprint(path).ok();
        let key = read_key_file(path)?;
        *self.seen.lock() = before;
        let mut cur = self.current.write();
        let changed = *cur != key;
        *cur = key;
        Ok(changed)
    }

    /// Re-read the key file only if its mtime, length or inode changed since the last read
    /// (the 1 s poll); `Ok(true)` when the key changed.
    pub fn reload_if_changed(&self) -> std::io::Result<bool> {
        let KeySource::File(path) = &self.source else { return Ok(false) };
        let now = fingerprint(path)?;
        if *self.seen.lock() == Some(now) {
            return Ok(false);
        }
        self.reload()
    }

    /// Whether the key comes from a file (and so can rotate).
    pub fn is_file(&self) -> bool {
        matches!(self.source, KeySource::File(_))
    }
}

fn read_key_file(path: &std::path::Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path)?;
    Secret::parse(&text).map_err(|problem| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("key file {} {problem}", path.display()))
    })
}

/// One inbound token: the client's name (its fairness and log identity) and its secret.
/// Written `name:token` in the config and in token files; serialised as `name:<redacted>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundToken {
    /// The client this token names.
    pub name: Arc<str>,
    /// The token itself.
    pub token: Secret,
}

impl InboundToken {
    /// Parse `name:token`; both parts must be non-empty, the name at most 64 visible ASCII bytes.
    pub fn parse(line: &str) -> Result<Self, String> {
        let (name, token) = line.trim().split_once(':').ok_or("expected name:token")?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the name before ':' must be 1 to 64 visible ASCII characters".into());
        }
        let token = Secret::new(token).ok_or("the token after ':' is empty")?;
        Ok(Self { name: Arc::from(name), token })
    }
}

impl<'de> serde::Deserialize<'de> for InboundToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // The error never repeats the input: it may hold a token.
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for InboundToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}:<redacted>", self.name))
    }
}

/// The tokens that may use the proxy. Checking a presented token compares it against every
/// token in constant time (per token; only the length of a mismatching token can leak).
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    tokens: Arc<[InboundToken]>,
}

impl TokenSet {
    /// The tokens from the config plus those in `file` (`name:token` per line; blank lines and
    /// `#` comments skipped). Errors name the file and line, never the token.
    pub fn load(listed: &[InboundToken], file: Option<&std::path::Path>) -> Result<Self, String> {
        let mut tokens = listed.to_vec();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                tokens.push(InboundToken::parse(line).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?);
            }
        }
        Ok(Self { tokens: tokens.into() })
    }

    /// Whether any token is configured (inbound authentication is on).
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The name of the client whose token is `presented`, if any.
    pub fn verify(&self, presented: &[u8]) -> Option<Arc<str>> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for t in self.tokens.iter() {
            // No early exit: every token is compared whatever matched before.
            let equal: bool = t.token.expose().as_bytes().ct_eq(presented).into();
            if equal && found.is_none() {
                found = Some(t.name.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_parse_verify_and_never_print() {
        let t = InboundToken::parse("billing:tok_abcdef123").unwrap();
        assert!(!format!("{t:?}").contains("tok_abcdef123"));
        assert!(InboundToken::parse("nocolon").is_err());
        assert!(InboundToken::parse("name:").is_err());
        let set = TokenSet::load(&[t], None).unwrap();
        assert_eq!(set.verify(b"tok_abcdef123").as_deref(), Some("billing"));
        assert_eq!(set.verify(b"tok_abcdef12"), None);
        assert_eq!(set.verify(b""), None);
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;

    #[test]
    fn the_poll_reads_the_file_only_when_it_changed() {
        let dir = std::env::temp_dir().join(format!("racknap-proxy-keystore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "sk_one").unwrap();
        let keys = KeyStore::load(KeySource::File(path.clone())).unwrap();
        assert!(!keys.reload_if_changed().unwrap(), "unchanged file: not re-read");
        std::fs::write(dir.join("next"), "sk_two_longer").unwrap();
        std::fs::rename(dir.join("next"), &path).unwrap(); // atomic swap, as secret mounts do
        assert!(keys.reload_if_changed().unwrap());
        assert_eq!(keys.current().expose(), "sk_two_longer");
        assert!(!keys.reload_if_changed().unwrap());
    }
}
