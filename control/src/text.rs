//! Text helpers that never panic on multi-byte characters.
//!
//! Why this exists: `String::truncate(200)` on text from Prometheus panicked
//! when byte 200 fell inside a UTF-8 character (release builds abort).
//! `String::truncate`, `split_off`, `drain` and friends are disallowed by
//! `clippy.toml`; use [`clip`].

/// The longest prefix of `s` of at most `max_bytes` bytes that ends on a
/// character boundary.
pub fn clip(s: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(s.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_on_char_boundaries() {
        let s = format!("{}é€😀", "a".repeat(199));
        assert_eq!(clip(&s, 200), "a".repeat(199));
        assert_eq!(clip(&s, 201), format!("{}é", "a".repeat(199)));
        assert_eq!(clip("abc", 10), "abc");
        assert_eq!(clip("😀", 3), "");
        assert_eq!(clip("", 0), "");
    }
}
