//! The parts of a JSON request body worth inspecting, found as the body
//! streams: the string values under `content`, `prompt`, `text`, `input`
//! and `system` (OpenAI-style `messages[].content`, including content parts
//! `[{"type":"text","text":…}]`, and completions' `prompt`), anywhere in the
//! document, plus every string nested inside such a value.
//!
//! A byte-at-a-time state machine: no allocation per value, bounded state
//! (the container stack stops growing at [`MAX_DEPTH`]; deeper strings are
//! all inspected, which errs on the safe side). Invalid JSON never panics; the
//! walker simply keeps reporting string interiors as it understands them.
//! Offsets of string interiors are raw (escapes included), so a mask written
//! over a finding keeps the document valid as long as it contains no `"` or `\`.

/// Deepest nesting tracked.
pub const MAX_DEPTH: usize = 64;

const TARGET_KEYS: &[&[u8]] = &[b"content", b"prompt", b"text", b"input", b"system"];
const KEY_CAP: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    /// Not in a string.
    Out,
    /// In an object key.
    Key,
    /// In a string value that is inspected.
    Target,
    /// In a string value that is not.
    Other,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Offset of the first `"` or `\\` in `s` (its length if none), eight bytes
/// at a time: a byte of `w ^ splat(c)` is zero where `w` has `c`, and
/// `(x - LO) & !x & HI` sets the top bit of the lowest zero byte of `x` (and
/// maybe of bytes above it, never below), so the lowest set bit marks the
/// first match. String interiors are most of a chat body; this is the
/// walker's inner loop.
fn quote_or_backslash(s: &[u8]) -> usize {
    let mut words = s.chunks_exact(8);
    let mut off = 0;
    for w in words.by_ref() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let w = u64::from_le_bytes(b);
        let q = w ^ (LO * u64::from(b'"'));
        let e = w ^ (LO * u64::from(b'\\'));
        let hit = (q.wrapping_sub(LO) & !q & HI) | (e.wrapping_sub(LO) & !e & HI);
        if hit != 0 {
            return off + (hit.trailing_zeros() / 8) as usize;
        }
        off += 8;
    }
    off + words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .unwrap_or(words.remainder().len())
}

/// A piece of a target string's interior inside one fed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Offset in the chunk of the piece's first byte.
    pub start: usize,
    /// Offset in the chunk just past it.
    pub end: usize,
    /// Whether the string ends right after this piece.
    pub closes: bool,
}

/// The streaming walker.
///
/// ```
/// use vigil_pii::json::JsonWalker;
/// let body = br#"{"model":"m","messages":[{"role":"user","content":"hi a@b.io"}]}"#;
/// let mut w = JsonWalker::default();
/// let pieces = w.feed(body);
/// assert_eq!(pieces.len(), 1);
/// assert_eq!(&body[pieces[0].start..pieces[0].end], b"hi a@b.io");
/// ```
#[derive(Debug, Clone)]
pub struct JsonWalker {
    /// Per container: is it an object, is it inside a target value.
    stack: Vec<(bool, bool)>,
    depth: usize,
    state: Str,
    escape: bool,
    key: [u8; KEY_CAP + 1],
    key_len: usize,
    /// The last key read in the innermost object is a target key.
    key_target: bool,
    /// In an object, expecting a key (true) or a value (false).
    expect_key: bool,
}

impl Default for JsonWalker {
    fn default() -> Self {
        JsonWalker {
            stack: Vec::new(),
            depth: 0,
            state: Str::Out,
            escape: false,
            key: [0; KEY_CAP + 1],
            key_len: 0,
            key_target: false,
            expect_key: false,
        }
    }
}

impl JsonWalker {
    fn in_target_scope(&self) -> bool {
        self.depth > MAX_DEPTH || self.stack.last().is_some_and(|c| c.1)
    }

    fn in_object(&self) -> bool {
        self.stack.last().is_some_and(|c| c.0) && self.depth <= MAX_DEPTH
    }

    /// Whether a value starting now is a target value.
    fn value_is_target(&self) -> bool {
        self.in_target_scope() || (self.in_object() && self.key_target)
    }

    /// Walk the next chunk; returns the target-string pieces in it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut piece_start: Option<usize> = if self.state == Str::Target {
            Some(0)
        } else {
            None
        };
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            i += 1;
            // Inside a value string nothing matters until its closing quote or
            // an escape: step to the next of either.
            if matches!(self.state, Str::Target | Str::Other)
                && !self.escape
                && !matches!(b, b'"' | b'\\')
            {
                i += quote_or_backslash(chunk.get(i..).unwrap_or(&[]));
                continue;
            }
            let i = i - 1;
            match self.state {
                Str::Key | Str::Target | Str::Other => {
                    if self.escape {
                        self.escape = false;
                        if self.state == Str::Key {
                            self.key_len = KEY_CAP + 1; // escaped keys are never target keys
                        }
                        continue;
                    }
                    if b == b'\\' {
                        self.escape = true;
                        continue;
                    }
                    if b == b'"' {
                        match self.state {
                            Str::Key => {
                                let k = self.key.get(..self.key_len).unwrap_or(&[]);
                                self.key_target = TARGET_KEYS.contains(&k);
                            }
                            Str::Target => {
                                if let Some(s) = piece_start.take() {
                                    out.push(Piece {
                                        start: s,
                                        end: i,
                                        closes: true,
                                    });
                                }
                            }
                            _ => {}
                        }
                        self.state = Str::Out;
                        continue;
                    }
                    if self.state == Str::Key {
                        if let Some(slot) = self.key.get_mut(self.key_len) {
                            *slot = b;
                        }
                        self.key_len = (self.key_len + 1).min(KEY_CAP + 1);
                    }
                }
                Str::Out => match b {
                    b'"' => {
                        if self.in_object() && self.expect_key {
                            self.state = Str::Key;
                            self.key_len = 0;
                        } else if self.value_is_target() {
                            self.state = Str::Target;
                            piece_start = Some(i + 1);
                        } else {
                            self.state = Str::Other;
                        }
                    }
                    b'{' | b'[' => {
                        let target = self.value_is_target();
                        self.depth += 1;
                        if self.depth <= MAX_DEPTH {
                            self.stack.push((b == b'{', target));
                        }
                        self.expect_key = b == b'{';
                        self.key_target = false;
                    }
                    b'}' | b']' => {
                        if self.depth <= MAX_DEPTH {
                            self.stack.pop();
                        }
                        self.depth = self.depth.saturating_sub(1);
                        self.expect_key = false;
                    }
                    b',' => {
                        self.expect_key = self.in_object();
                    }
                    b':' => {
                        self.expect_key = false;
                    }
                    _ => {}
                },
            }
        }
        if let Some(s) = piece_start {
            if s < chunk.len() {
                out.push(Piece {
                    start: s,
                    end: chunk.len(),
                    closes: false,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut w = JsonWalker::default();
        let mut cur = Vec::new();
        let mut all = Vec::new();
        for c in body.chunks(size) {
            for p in w.feed(c) {
                cur.extend_from_slice(c.get(p.start..p.end).unwrap_or(&[]));
                if p.closes {
                    all.push(std::mem::take(&mut cur));
                }
            }
        }
        all
    }

    #[test]
    fn openai_shapes() {
        let body = br#"{"model":"gpt","messages":[{"role":"system","content":"be \"nice\""},{"role":"user","content":[{"type":"text","text":"card 4111"},{"type":"image_url","image_url":{"url":"x"}}]}],"prompt":["a","b"],"user":"u@x.io"}"#;
        let want: Vec<Vec<u8>> = vec![
            br#"be \"nice\""#.to_vec(),
            b"text".to_vec(),
            b"card 4111".to_vec(),
            b"image_url".to_vec(),
            b"x".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
        ];
        for size in [1, 3, 1000] {
            assert_eq!(texts(body, size), want, "chunk {size}");
        }
    }

    #[test]
    fn quote_search_matches_the_plain_one() {
        let mut seed = 11u64;
        for n in 0..2000usize {
            let mut s = Vec::new();
            for _ in 0..(n % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly bytes near the targets (0x21, 0x23, 0x5b, 0x5d, 0xa2, 0xdc …).
                s.push(
                    *b"ab\"\\!#[]\xa2\xdc\x00\xff \x01"
                        .get((seed % 14) as usize)
                        .unwrap_or(&b'x'),
                );
            }
            let want = s
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .unwrap_or(s.len());
            assert_eq!(quote_or_backslash(&s), want, "{s:?}");
        }
    }

    #[test]
    fn deep_and_broken_input() {
        let mut deep = vec![b'['; 100_000];
        deep.extend_from_slice(b"\"x\"");
        assert_eq!(texts(&deep, 4096).len(), 1);
        let _ = texts(b"}}]]\"\\", 2);
        let _ = texts(&(0..=255u8).cycle().take(10_000).collect::<Vec<_>>(), 17);
    }
}
