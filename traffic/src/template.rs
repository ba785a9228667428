//! Path templates: a request path with its variable parts folded to `{id}`.
//!
//! Rules, per `/`-separated segment (the query string and fragment are
//! dropped first; they never reach a template):
//! - all digits (`123`), a UUID, a hex string of 12+ characters with a digit
//!   (hashes, object ids), a segment of 4+ characters more than half digits
//!   (`2024-01-02`, `ord_123456`), a long mixed token (16+ characters with
//!   letters and digits: API keys, base64 ids) → `{id}`;
//! - anything with a character outside `[A-Za-z0-9._~-]` (percent-encoding,
//!   `@` of an e-mail address, `:`) or longer than 64 bytes → `{id}`: what
//!   could carry personal data is never copied;
//! - everything else is kept (`v1`, `models`, `llama-3`, `infer`).
//!
//! A template has at most [`MAX_SEGMENTS`] segments (the rest become one
//! `{rest}`) and at most [`MAX_TEMPLATE_BYTES`] bytes, so every template
//! fits the wire bound and only contains characters safe in a regular
//! expression after escaping `.` ([`to_regex`]).

/// The placeholder of a variable segment.
pub const ID: &str = "{id}";
/// Placeholder for segments past [`MAX_SEGMENTS`].
pub const REST: &str = "{rest}";
/// Most segments kept.
pub const MAX_SEGMENTS: usize = 12;
/// Longest template, bytes.
pub const MAX_TEMPLATE_BYTES: usize = 200;
/// Longest segment kept verbatim.
const MAX_SEGMENT_BYTES: usize = 64;

fn is_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Whether one segment is variable (folded to `{id}`).
pub fn is_variable(seg: &[u8]) -> bool {
    if seg.len() > MAX_SEGMENT_BYTES || !seg.iter().copied().all(is_safe) {
        return true;
    }
    let digits = seg.iter().filter(|b| b.is_ascii_digit()).count();
    let letters = seg.iter().filter(|b| b.is_ascii_alphabetic()).count();
    if digits == 0 {
        return false;
    }
    digits == seg.len()
        || is_uuid(seg)
        || (seg.len() >= 12 && seg.iter().all(u8::is_ascii_hexdigit))
        || (seg.len() >= 4 && digits * 2 > seg.len())
        || (seg.len() >= 16 && letters > 0)
}

/// The template of a request path (`:path`, raw bytes). Total: any input
/// gives a template starting with `/` (a non-origin-form path such as `*` is
/// templated by the same segment rules: `/{id}`).
pub fn template(path: &[u8]) -> String {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let path = path.get(..end).unwrap_or_default();
    let mut out = String::with_capacity(path.len().min(MAX_TEMPLATE_BYTES));
    let body = path.strip_prefix(b"/").unwrap_or(path);
    if body.is_empty() {
        return "/".to_string();
    }
    // Room kept for a final `/{rest}`.
    let budget = MAX_TEMPLATE_BYTES - REST.len() - 1;
    for (i, seg) in body.split(|&b| b == b'/').enumerate() {
        let variable = !seg.is_empty() && is_variable(seg);
        let len = if variable { ID.len() } else { seg.len() };
        if i == MAX_SEGMENTS || out.len() + 1 + len > budget {
            out.push('/');
            out.push_str(REST);
            break;
        }
        out.push('/');
        if variable {
            out.push_str(ID);
        } else {
            // Kept segments are safe ASCII.
            out.extend(seg.iter().map(|&b| char::from(b)));
        }
    }
    out
}

/// An RE2 regular expression (full match) for the paths a template covers:
/// `{id}` → one segment `[^/]+`, `{rest}` → `.*`, `.` escaped. What Envoy's
/// RBAC `url_path` `safe_regex` takes (the query string is not part of it).
pub fn to_regex(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(ID) {
            out.push_str("[^/]+");
            rest = r;
        } else if let Some(r) = rest.strip_prefix(REST) {
            out.push_str(".*");
            rest = r;
        } else {
            let mut chars = rest.chars();
            match chars.next() {
                Some(c) if "\\.+*?()|[]{}^$".contains(c) => {
                    out.push('\\');
                    out.push(c);
                }
                Some(c) => out.push(c),
                None => break,
            }
            rest = chars.as_str();
        }
    }
    out
}

/// The Istio `AuthorizationPolicy` path of a template: `{id}` → `{*}` (one
/// segment), `{rest}` → `{**}` (Istio ≥ 1.22 path templates).
pub fn to_istio_path(template: &str) -> String {
    template.replace(ID, "{*}").replace(REST, "{**}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn folds_ids_and_keeps_names() {
        for (path, want) in [
            ("/v1/models/llama-3/infer", "/v1/models/llama-3/infer"),
            ("/v1/orders/123", "/v1/orders/{id}"),
            ("/v1/orders/123?user=alice@example.com", "/v1/orders/{id}"),
            ("/v1/orders/123#frag", "/v1/orders/{id}"),
            (
                "/users/550e8400-e29b-41d4-a716-446655440000/cart",
                "/users/{id}/cart",
            ),
            ("/blobs/9f86d081884c7d659a2feaa0c55ad015", "/blobs/{id}"),
            ("/files/ord_123456", "/files/{id}"),
            ("/day/2024-01-02", "/day/{id}"),
            ("/key/AKIAabcdefgh12345678", "/key/{id}"),
            ("/u/alice%40example.com", "/u/{id}"),
            ("/u/alice@example.com", "/u/{id}"),
            ("/v2/api", "/v2/api"),
            ("/healthz", "/healthz"),
            ("", "/"),
            ("/", "/"),
            ("/a//b/", "/a//b/"),
        ] {
            assert_eq!(template(path.as_bytes()), want, "{path}");
        }
    }

    #[test]
    fn bounded_and_total_on_hostile_input() {
        let long = "/seg".repeat(1000);
        let t = template(long.as_bytes());
        assert!(t.len() <= MAX_TEMPLATE_BYTES, "{}", t.len());
        assert!(t.ends_with(REST));
        assert_eq!(template(b"*"), "/{id}");
        assert_eq!(template(b"http://x/y"), "/{id}//x/y");
        let wide = format!("/{}", "a".repeat(10_000));
        assert_eq!(template(wide.as_bytes()), "/{id}");
        let bytes: Vec<u8> = (0u8..=255).collect();
        let t = template(&bytes);
        assert!(t.starts_with('/') && t.is_ascii() && !t.chars().any(char::is_control));
        let many = "/abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvw".repeat(20);
        assert!(template(many.as_bytes()).len() <= MAX_TEMPLATE_BYTES);
    }

    #[test]
    fn regex_and_istio_forms() {
        assert_eq!(to_regex("/v1/orders/{id}"), "/v1/orders/[^/]+");
        assert_eq!(to_regex("/a.b/{id}/{rest}"), "/a\\.b/[^/]+/.*");
        assert_eq!(to_istio_path("/v1/orders/{id}"), "/v1/orders/{*}");
    }
}
