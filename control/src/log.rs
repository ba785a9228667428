//! Structured logs: one JSON object per line on stderr.
//!
//! Why this exists: the service runs unattended next to a mesh; its logs are
//! read by machines (Loki, CloudWatch, `jq`) more than by people, so every
//! line is a JSON object `{"ts_ms":…,"level":…,"msg":…, …fields}`. Secrets
//! (the bearer token) are never passed here. Noisy events (rejected
//! reports) go through [`RateLimit`] so a misbehaving sender cannot flood
//! the log.

use serde_json::{Map, Value};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Write one log line. `fields` should be a JSON object; other values are
/// logged under `"data"`.
pub fn log(level: &str, msg: &str, fields: Value) {
    let mut obj = Map::new();
    obj.insert("ts_ms".into(), Value::from(now_ms()));
    obj.insert("level".into(), Value::from(level));
    obj.insert("msg".into(), Value::from(msg));
    match fields {
        Value::Object(map) => {
            for (k, v) in map {
                obj.insert(k, v);
            }
        }
        Value::Null => {}
        other => {
            obj.insert("data".into(), other);
        }
    }
    let line = Value::Object(obj).to_string();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Info line.
pub fn info(msg: &str, fields: Value) {
    log("info", msg, fields);
}

/// Warning line.
pub fn warn(msg: &str, fields: Value) {
    log("warn", msg, fields);
}

/// Error line.
pub fn error(msg: &str, fields: Value) {
    log("error", msg, fields);
}

/// At most `per_second` events per wall-clock second pass (approximately:
/// races at a second's boundary may let a few more through).
#[derive(Debug)]
pub struct RateLimit {
    per_second: u64,
    second: AtomicU64,
    count: AtomicU64,
}

impl RateLimit {
    /// A limiter letting `per_second` events through each second.
    pub const fn new(per_second: u64) -> Self {
        RateLimit {
            per_second,
            second: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Whether this event may be logged.
    pub fn allow(&self) -> bool {
        let second = now_ms() / 1000;
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.count.store(0, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed) < self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_caps_a_second() {
        let r = RateLimit::new(3);
        let allowed = (0..10).filter(|_| r.allow()).count();
        assert!((3..=6).contains(&allowed), "{allowed}");
    }
}
