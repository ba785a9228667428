//! Where the service may send requests: the webhook allowlist, and URL
//! redaction for anything shown or logged.
//!
//! Why this exists: a webhook URL is both a secret (Slack's path is the
//! credential) and an egress target (anyone who may declare a canary could
//! make the service POST to any address inside the network). Webhook
//! targets must match the config file's `webhook_allow` list (host, or
//! host:port; nothing allowed when the list is empty); URLs with user info
//! are refused; the API and the logs show only scheme and authority.

/// Scheme and authority only: webhook paths often carry secrets (Slack).
pub fn redact(url: &str) -> String {
    let mut parts = url.splitn(4, '/');
    let scheme = parts.next().unwrap_or("");
    let _ = parts.next();
    let authority = parts.next().unwrap_or("");
    if parts.next().is_some() {
        format!("{scheme}//{authority}/(redacted)")
    } else {
        format!("{scheme}//{authority}")
    }
}

/// `(host, port)` of an `http://` or `https://` URL (lower-case host, the
/// scheme's default port when none), `None` when it has user info or no
/// host.
pub fn authority(url: &str) -> Option<(String, u16)> {
    let (rest, default) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else {
        (url.strip_prefix("http://")?, 80)
    };
    let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
    if auth.is_empty() || auth.contains('@') {
        return None;
    }
    let (host, port) = match auth.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || auth.starts_with('[') => match p.parse() {
            Ok(p) => (h, p),
            Err(_) if p.is_empty() => (h, default),
            Err(_) => return None,
        },
        _ => (auth, default),
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// The webhook allowlist: entries `host` (any port) or `host:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    entries: Vec<(String, Option<u16>)>,
}

impl Allow {
    /// Parse the entries; the first bad one is named.
    pub fn parse(entries: &[String]) -> Result<Allow, String> {
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let e = e.trim().to_ascii_lowercase();
            let bad = e.is_empty() || e.contains(['/', '@', ' ']);
            if bad {
                return Err(format!(
                    "webhook_allow[{i}]: {e:?} is not a host or host:port"
                ));
            }
            match e.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && !h.ends_with(':') => match p.parse::<u16>() {
                    Ok(p) => out.push((h.to_string(), Some(p))),
                    Err(_) => return Err(format!("webhook_allow[{i}]: bad port in {e:?}")),
                },
                _ => out.push((e, None)),
            }
        }
        Ok(Allow { entries: out })
    }

    /// Whether `url` may be called.
    pub fn allows(&self, url: &str) -> bool {
        let Some((host, port)) = authority(url) else {
            return false;
        };
        self.entries
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| p == port))
    }

    /// Check every URL; `Err((index, message))` for the first refused.
    pub fn check(&self, urls: &[String]) -> Result<(), (usize, String)> {
        for (i, url) in urls.iter().enumerate() {
            if !self.allows(url) {
                return Err((
                    i,
                    format!(
                        "webhook target {} is not in the config file's webhook_allow list",
                        redact(url)
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_and_redaction() {
        let a = Allow::parse(&["hooks.slack.com".into(), "127.0.0.1:9000".into()]).unwrap();
        assert!(a.allows("https://hooks.slack.com/services/T0/B0/secret"));
        assert!(a.allows("http://127.0.0.1:9000/hook"));
        assert!(!a.allows("http://127.0.0.1:9001/hook"));
        assert!(!a.allows("http://10.0.0.1/admin"));
        assert!(!a.allows("http://hooks.slack.com@10.0.0.1/x"));
        assert!(!a.allows("ftp://hooks.slack.com/x"));
        assert!(Allow::default().check(&["http://x/y".into()]).is_err());
        assert!(Allow::parse(&["a/b".into()]).is_err());
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/(redacted)"
        );
        assert_eq!(redact("http://h:1"), "http://h:1");
    }
}
