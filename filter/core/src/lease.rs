//! The scorer lease: which worker VM scores every series this period.
//!
//! Every worker ticks, but scoring must happen once per tick for the whole
//! process, on one heap that keeps the per-series baselines. The lease is one
//! shared-data key holding the holder's random id and an expiry; the holder
//! renews it every tick, so it is sticky, and another worker takes over only
//! after the holder has been silent for the whole time-to-live. The key is the
//! configuration's [`crate::keys::Keys::lease`]: each configuration instance
//! has its own scorer. A holder whose plugin is being removed gives the lease
//! up ([`release`]) so a successor of the same identity takes over at once.

use crate::codec::{Reader, Writer};
use crate::shared::{SharedStore, CREATE_ONLY_CAS};

/// Decoded lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Holder's VM id.
    pub holder: u64,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
}

fn encode(l: &Lease) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(l.holder);
    w.uint(l.expires_ms);
    w.finish()
}

fn decode(bytes: &[u8]) -> Option<Lease> {
    let mut r = Reader::new(bytes)?;
    let lease = Lease {
        holder: r.uint()?,
        expires_ms: r.uint()?,
    };
    r.is_done().then_some(lease)
}

/// Take or renew the lease for `me`. Returns true when `me` holds it for
/// this tick.
pub fn acquire<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    me: u64,
    now_ms: u64,
    ttl_ms: u64,
) -> bool {
    let (current, cas) = match store.get(key) {
        Some((bytes, cas)) => (decode(&bytes), Some(cas)),
        None => (None, Some(CREATE_ONLY_CAS)),
    };
    let free = match current {
        Some(l) => l.holder == me || l.expires_ms <= now_ms,
        None => true, // missing or unreadable
    };
    if !free {
        return false;
    }
    let lease = Lease {
        holder: me,
        expires_ms: now_ms.saturating_add(ttl_ms),
    };
    store.set(key, &encode(&lease), cas).is_ok()
}

/// Give the lease up if `me` holds it (expired at once, so any worker of the
/// same configuration takes it at its next tick). Returns true when released.
pub fn release<S: SharedStore + ?Sized>(store: &S, key: &str, me: u64) -> bool {
    let Some((bytes, cas)) = store.get(key) else {
        return false;
    };
    match decode(&bytes) {
        Some(l) if l.holder == me => store
            .set(
                key,
                &encode(&Lease {
                    holder: me,
                    expires_ms: 0,
                }),
                Some(cas),
            )
            .is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;

    const K: &str = "vigil.v2.a.lease";

    #[test]
    fn one_holder_sticky_until_silent() {
        let s = MemoryStore::new();
        assert!(acquire(&s, K, 1, 1000, 3000));
        assert!(!acquire(&s, K, 2, 1500, 3000));
        assert!(acquire(&s, K, 1, 2000, 3000), "holder renews");
        assert!(!acquire(&s, K, 2, 4999, 3000));
        assert!(acquire(&s, K, 2, 5000, 3000), "taken over once expired");
        assert!(!acquire(&s, K, 1, 5100, 3000));
    }

    #[test]
    fn corrupt_lease_is_taken() {
        let s = MemoryStore::new();
        s.set(K, b"junk", None).unwrap();
        assert!(acquire(&s, K, 7, 10, 3000));
    }

    #[test]
    fn two_configurations_hold_two_leases() {
        let s = MemoryStore::new();
        assert!(acquire(&s, K, 1, 1000, 3000));
        assert!(acquire(&s, "vigil.v2.b.lease", 2, 1000, 3000));
        assert!(!acquire(&s, K, 2, 1500, 3000));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let s = MemoryStore::new();
        assert!(acquire(&s, K, 1, 1000, 3000));
        assert!(!release(&s, K, 2), "only the holder releases");
        assert!(release(&s, K, 1));
        assert!(acquire(&s, K, 2, 1001, 3000));
    }
}
