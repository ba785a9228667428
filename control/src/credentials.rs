//! Scoped credentials: who may call which write, and under which name.
//!
//! Why this exists: one shared token that did everything (and shipped in
//! every plugin configuration, visible in Envoy's `/config_dump`) let
//! anyone who read a sidecar's configuration move canaries. Now there are
//! two kinds of credential, several of each, read from a credentials file:
//!
//! - **reporter** — may only `POST /v1/reports`, and only for the sidecar
//!   identities its `sidecars` patterns allow (`"checkout-*"`, `"*.shop"`,
//!   `"*"`). This is the only secret a plugin configuration carries; alone
//!   it cannot approve, reject, pause, resume or declare anything, and the
//!   evidence it can send is bounded per sidecar (see `crate::plausibility`)
//!   and re-judged by the service.
//! - **operator** — named people or automation: declare, approve, reject,
//!   pause, resume. Every such action is attributed to the credential's
//!   name (never to a name the caller types); reserved names (`config-file`,
//!   `vigil`, …) are refused so the audit trail cannot be faked.
//!
//! Only SHA-256 digests of the tokens are stored (tokens are long random
//! strings — `vigil-control credential new` makes them — so a fast hash is
//! the right tool; a slow password hash would only add latency per report).
//! Lookup is by digest, so the comparison never touches the secret.
//!
//! Rotation without restart: the file is re-read when its modification
//! time, size or content changes (checked every second, and on `SIGHUP`);
//! a file that fails to parse is refused whole and the previous set stays
//! in force (logged, counted).
//!
//! ```yaml
//! reporters:
//!   - name: shop-sidecars
//!     sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     sidecars: ["*.shop"]
//! operators:
//!   - name: alice
//!     sha256: 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
//! ```

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Names no credential may have: they are the service's own actors.
pub const RESERVED_NAMES: [&str; 7] = [
    "config-file",
    "vigil",
    "api",
    "system",
    "prometheus",
    "anonymous",
    "root",
];

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `POST /v1/reports` only, for its sidecars.
    Reporter,
    /// Operator actions and declarations.
    Operator,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reporter => "reporter",
            Role::Operator => "operator",
        }
    }
}

/// One credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Its name (the actor in the audit trail).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Sidecar identity patterns (reporters; `*` matches any run of
    /// characters).
    pub sidecars: Vec<String>,
}

impl Credential {
    /// Whether this (reporter) credential may report as `sidecar`.
    pub fn may_report_as(&self, sidecar: &str) -> bool {
        self.role == Role::Reporter && self.sidecars.iter().any(|p| glob(p, sidecar))
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let Some(mut rest) = text.get(first.len()..text.len() - last.len()) else {
        return false;
    };
    if !text.ends_with(last) {
        return false;
    }
    for mid in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
        match rest.find(mid) {
            Some(i) => rest = rest.get(i + mid.len()..).unwrap_or(""),
            None => return false,
        }
    }
    true
}

/// SHA-256 of a token, lower-case hex.
pub fn digest_hex(token: &str) -> String {
    let d = Sha256::digest(token.trim().as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    sidecars: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    reporters: Vec<RawEntry>,
    #[serde(default)]
    operators: Vec<RawEntry>,
}

/// A parsed credentials set.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_digest: HashMap<[u8; 32], Arc<Credential>>,
}

impl Credentials {
    /// Parse a credentials file (YAML or JSON). Refusals name the entry.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let raw: RawFile =
            serde_yaml::from_str(text).map_err(|e| format!("credentials file: {e}"))?;
        let mut by_digest = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (role, list) in [
            (Role::Reporter, raw.reporters),
            (Role::Operator, raw.operators),
        ] {
            for (i, e) in list.into_iter().enumerate() {
                let at = format!("{}s[{i}]", role.as_str());
                let ok_name = !e.name.is_empty()
                    && e.name.len() <= 128
                    && e.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
                if !ok_name {
                    return Err(format!(
                        "{at}.name {:?}: 1 to 128 characters of A-Z a-z 0-9 . _ @ -",
                        e.name
                    ));
                }
                if RESERVED_NAMES.contains(&e.name.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "{at}.name {:?} is reserved for the service's own actions",
                        e.name
                    ));
                }
                if !names.insert(e.name.clone()) {
                    return Err(format!("{at}.name {:?} is used twice", e.name));
                }
                let digest = parse_hex32(&e.sha256).ok_or_else(|| {
                    format!("{at}.sha256 must be 64 hex digits (vigil-control credential hash)")
                })?;
                match role {
                    Role::Reporter if e.sidecars.is_empty() => {
                        return Err(format!(
                            "{at}.sidecars: a reporter must name the sidecar identities it may report as (patterns, \"*\" for any)"
                        ))
                    }
                    Role::Operator if !e.sidecars.is_empty() => {
                        return Err(format!("{at}.sidecars: only reporters have sidecars"))
                    }
                    _ => {}
                }
                if e.sidecars.iter().any(|p| p.is_empty() || p.len() > 256) {
                    return Err(format!("{at}.sidecars: patterns are 1 to 256 bytes"));
                }
                let cred = Arc::new(Credential {
                    name: e.name,
                    role,
                    sidecars: e.sidecars,
                });
                if by_digest.insert(digest, cred).is_some() {
                    return Err(format!("{at}.sha256: the same token is used twice"));
                }
            }
        }
        Ok(Credentials { by_digest })
    }

    /// The credential a presented token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Credential>> {
        let d: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        self.by_digest.get(&d).cloned()
    }

    /// How many of each role.
    pub fn counts(&self) -> (usize, usize) {
        let r = self
            .by_digest
            .values()
            .filter(|c| c.role == Role::Reporter)
            .count();
        (r, self.by_digest.len() - r)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    digest: [u8; 32],
}

/// The credentials in force, re-read from their file when it changes.
#[derive(Debug)]
pub struct CredentialStore {
    path: Option<PathBuf>,
    current: RwLock<Arc<Credentials>>,
    stamp: Mutex<Option<Stamp>>,
    trust_xfcc: bool,
}

/// The namespace of the SPIFFE identity in an `x-forwarded-client-cert`
/// header (`…;URI=spiffe://TRUST_DOMAIN/ns/NS/sa/SA;…`), as the control
/// service's own Istio sidecar sets it under `SANITIZE_SET` (it replaces
/// whatever the client sent, so the value is the verified mTLS peer). With
/// several elements (proxies appending), the last one is the direct peer.
pub fn xfcc_namespace(header: &str) -> Option<String> {
    let element = header.rsplit(',').next()?;
    element.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("uri") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        let path = v.strip_prefix("spiffe://")?;
        let mut parts = path.split('/').skip(1);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(_)) if !ns.is_empty() => Some(ns.to_string()),
            _ => None,
        }
    })
}

impl CredentialStore {
    /// Load `path` (refused whole when invalid).
    pub fn open(path: &Path) -> Result<CredentialStore, String> {
        let store = CredentialStore {
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(Credentials::default())),
            stamp: Mutex::new(None),
            trust_xfcc: false,
        };
        store.reload()?;
        Ok(store)
    }

    /// A fixed set (tests, the in-process benchmark).
    pub fn fixed(creds: Credentials) -> CredentialStore {
        CredentialStore {
            path: None,
            current: RwLock::new(Arc::new(creds)),
            stamp: Mutex::new(None),
            trust_xfcc: false,
        }
    }

    /// Also require reports to carry an `x-forwarded-client-cert` whose
    /// SPIFFE namespace matches the report's `sidecar` (`POD.NAMESPACE`).
    /// Only behind an Istio sidecar that sanitizes the header.
    pub fn with_xfcc(mut self, on: bool) -> Self {
        self.trust_xfcc = on;
        self
    }

    /// Whether reports are bound to the XFCC namespace.
    pub fn xfcc_required(&self) -> bool {
        self.trust_xfcc
    }

    /// The set in force.
    pub fn current(&self) -> Arc<Credentials> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-read the file if it changed. `Ok(true)` when a new set is in
    /// force; on error the previous set stays.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("credentials file {}: {e}", path.display()))?;
        let mut stamp = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("credentials file {}: {e}", path.display()))?;
        let now = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            digest: Sha256::digest(text.as_bytes()).into(),
        };
        if stamp.as_ref() == Some(&now) {
            return Ok(false);
        }
        let creds = Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(creds);
        *stamp = Some(now);
        Ok(true)
    }
}

/// A new random token (32 bytes from the OS, hex).
pub fn new_token() -> Result<String, String> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(reporter: &str, operator: &str) -> String {
        format!(
            "reporters:\n  - name: sidecars\n    sha256: {}\n    sidecars: [\"*.shop\", \"edge-1\"]\noperators:\n  - name: alice\n    sha256: {}\n",
            digest_hex(reporter),
            digest_hex(operator)
        )
    }

    #[test]
    fn roles_and_bindings() {
        let c = Credentials::parse(&file("r-token", "o-token")).unwrap();
        assert_eq!(c.counts(), (1, 1));
        let r = c.authenticate("r-token").unwrap();
        assert_eq!((r.name.as_str(), r.role), ("sidecars", Role::Reporter));
        assert!(r.may_report_as("checkout-1.shop"));
        assert!(r.may_report_as("edge-1"));
        assert!(!r.may_report_as("edge-2"));
        assert!(!r.may_report_as("x.shop.evil"));
        let o = c.authenticate("o-token").unwrap();
        assert_eq!(o.role, Role::Operator);
        assert!(!o.may_report_as("a.shop"));
        assert!(c.authenticate("nope").is_none());
        assert!(c.authenticate("").is_none());
    }

    #[test]
    fn xfcc_namespace_is_the_direct_peers() {
        let h = r#"By=spiffe://cluster.local/ns/vigil-system/sa/vigil-control;Hash=ab;Subject="";URI=spiffe://cluster.local/ns/shop/sa/checkout"#;
        assert_eq!(xfcc_namespace(h).as_deref(), Some("shop"));
        let two = format!("URI=spiffe://td/ns/evil/sa/x,{h}");
        assert_eq!(xfcc_namespace(&two).as_deref(), Some("shop"));
        assert_eq!(xfcc_namespace("URI=https://x/ns/a/sa/b"), None);
        assert_eq!(xfcc_namespace("Hash=ab"), None);
        assert_eq!(xfcc_namespace("URI=spiffe://td/ns//sa/x"), None);
    }

    #[test]
    fn glob_matches() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxyyc", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} {t}");
        }
    }

    #[test]
    fn refusals_name_the_entry() {
        let d = digest_hex("x");
        for (text, needle) in [
            (
                format!("operators:\n  - name: vigil\n    sha256: {d}\n"),
                "reserved",
            ),
            (
                format!("operators:\n  - name: Config-File\n    sha256: {d}\n"),
                "reserved",
            ),
            (
                format!("operators:\n  - name: a b\n    sha256: {d}\n"),
                "operators[0].name",
            ),
            (
                "operators:\n  - name: a\n    sha256: zz\n".to_string(),
                "operators[0].sha256",
            ),
            (
                format!("reporters:\n  - name: r\n    sha256: {d}\n"),
                "reporters[0].sidecars",
            ),
            (
                format!(
                    "operators:\n  - name: a\n    sha256: {d}\n  - name: a\n    sha256: {}\n",
                    digest_hex("y")
                ),
                "used twice",
            ),
            (
                format!("operators:\n  - name: a\n    sha256: {d}\n  - name: b\n    sha256: {d}\n"),
                "same token",
            ),
            ("tokens: [1]\n".to_string(), "unknown field"),
        ] {
            let e = Credentials::parse(&text).unwrap_err();
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn reload_on_change_keeps_the_old_set_on_error() {
        let dir = std::env::temp_dir().join(format!("vigil-creds-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("credentials.yaml");
        std::fs::write(&path, file("r1", "o1")).unwrap();
        let store = CredentialStore::open(&path).unwrap();
        assert!(store.current().authenticate("o1").is_some());
        assert!(!store.reload().unwrap());
        std::fs::write(&path, file("r2", "o2")).unwrap();
        assert!(store.reload().unwrap());
        assert!(store.current().authenticate("o1").is_none());
        assert!(store.current().authenticate("o2").is_some());
        std::fs::write(&path, "operators: [{").unwrap();
        assert!(store.reload().is_err());
        assert!(store.current().authenticate("o2").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
