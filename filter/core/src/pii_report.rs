//! The PII guard's counts on their way to the control service.
//!
//! Each request an inspected route finishes adds its counts
//! ([`crate::pii_guard::BodyGuard::counts`]: types, actions, numbers —
//! never a value or a span) to the worker's [`PiiOutbox`]. Every tick each
//! worker merges its outbox into the shared-data key the configuration's PII key ([`crate::keys::Keys::pii`]) (bounded CAS
//! retries; what cannot be merged stays in the outbox for the next tick), and
//! the lease holder takes the merged counts out of it into its report's `pii`
//! (`vigil-wire`, chunk 0). Bounded: at most
//! [`vigil_wire::pii::MAX_PII_ROUTES`] routes, and only routes of the `pii`
//! section ever get here.

use crate::shared::{update, SetError, SharedStore, Update};
use vigil_wire::pii::{merge, PiiRoute};

/// This worker's counts not yet merged into the configuration's PII key
/// ([`crate::keys::Keys::pii`], which holds the counts merged by every
/// worker since the lease holder last took them: a JSON array of
/// `vigil-wire` `PiiRoute`s).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PiiOutbox {
    pending: Vec<PiiRoute>,
    /// Requests whose counts did not fit (over the route bound).
    pub dropped: u64,
}

fn decode(bytes: &[u8]) -> Vec<PiiRoute> {
    serde_json::from_slice(bytes).unwrap_or_default()
}

fn encode(routes: &[PiiRoute]) -> Vec<u8> {
    serde_json::to_vec(routes).unwrap_or_else(|_| b"[]".to_vec())
}

impl PiiOutbox {
    /// Add one request's counts.
    pub fn add(&mut self, counts: &PiiRoute) {
        if !merge(&mut self.pending, counts) {
            self.dropped = self.dropped.saturating_add(counts.requests);
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Merge what is waiting into the configuration's PII key ([`crate::keys::Keys::pii`]); kept for the next tick when
    /// the update does not go through. Returns the CAS retries used.
    pub fn flush<S: SharedStore + ?Sized>(&mut self, store: &S, key: &str, attempts: u32) -> u32 {
        if self.pending.is_empty() {
            return 0;
        }
        let pending = &self.pending;
        let outcome = update(store, key, attempts, |current| {
            let mut merged = current.map(decode).unwrap_or_default();
            for r in pending {
                merge(&mut merged, r);
            }
            encode(&merged)
        });
        match outcome {
            Update::Written { retries } => {
                self.pending.clear();
                retries
            }
            Update::Exhausted => attempts,
            Update::Failed => 0,
        }
    }
}

/// The lease holder: take every worker's merged counts out of the configuration's PII key ([`crate::keys::Keys::pii`]),
/// leaving it empty (nothing when it is empty or the take keeps conflicting;
/// what is not taken is taken next tick).
pub fn take<S: SharedStore + ?Sized>(store: &S, key: &str, attempts: u32) -> Vec<PiiRoute> {
    const EMPTY: &[u8] = b"[]";
    for _ in 0..attempts.max(1) {
        let Some((bytes, cas)) = store.get(key) else {
            return Vec::new();
        };
        if bytes == EMPTY {
            return Vec::new();
        }
        match store.set(key, EMPTY, Some(cas)) {
            Ok(()) => {
                let mut routes = decode(&bytes);
                routes.retain(|r| !r.is_empty());
                return routes;
            }
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => break,
        }
    }
    Vec::new()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;

    fn one(route: &str, kind: &str, n: u64) -> PiiRoute {
        let mut r = PiiRoute::new(route);
        r.requests = 1;
        r.inspected_bytes = 100;
        r.add_finding(kind, "detect", n);
        r
    }

    #[test]
    fn workers_merge_and_the_holder_takes_once() {
        let store = MemoryStore::default();
        let mut a = PiiOutbox::default();
        let mut b = PiiOutbox::default();
        a.add(&one("chat", "card", 1));
        a.add(&one("chat", "email", 2));
        b.add(&one("chat", "card", 3));
        b.add(&one("search", "ip", 1));
        a.flush(&store, "k", 4);
        b.flush(&store, "k", 4);
        assert!(a.is_empty() && b.is_empty());
        let got = take(&store, "k", 4);
        assert_eq!(got.len(), 2);
        let chat = got.iter().find(|r| r.route == "chat").unwrap();
        assert_eq!((chat.requests, chat.inspected_bytes), (3, 300));
        assert_eq!(chat.findings_total(), 6);
        assert!(take(&store, "k", 4).is_empty(), "taken once");
        // Counts are all that is stored: no field could hold a value.
        let raw = String::from_utf8(encode(&got)).unwrap();
        assert!(!raw.contains("span") && !raw.contains("value"), "{raw}");
    }

    /// A host whose sets fail while `failing`.
    struct Flaky {
        inner: MemoryStore,
        failing: std::cell::Cell<bool>,
    }

    impl SharedStore for Flaky {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if self.failing.get() {
                return Err(SetError::Host);
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_failed_flush_keeps_the_counts() {
        let store = Flaky {
            inner: MemoryStore::default(),
            failing: std::cell::Cell::new(true),
        };
        let mut a = PiiOutbox::default();
        a.add(&one("chat", "card", 1));
        a.flush(&store, "k", 2);
        assert!(!a.is_empty());
        store.failing.set(false);
        a.flush(&store, "k", 2);
        assert!(a.is_empty());
        assert_eq!(take(&store, "k", 2)[0].findings_total(), 1);
    }
}
