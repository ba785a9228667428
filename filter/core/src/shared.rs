//! The host's shared-data map, as a small trait, plus the compare-and-swap
//! update loop every shared write goes through.
//!
//! Envoy's shared data (proxy-wasm `get/set_shared_data`) is one process-wide
//! map guarded by a mutex. Its CAS rules, which this module is built around:
//! a `get` returns the value with a CAS token; a `set` with a token fails with
//! `CasMismatch` if someone wrote in between; a `set` with token 0 overwrites
//! unconditionally; and a `set` on a *missing* key ignores the token. So a key
//! is created with [`CREATE_ONLY_CAS`], a token that matches no live value:
//! the write succeeds only while the key is still missing, and a worker that
//! loses the creation race retries against the winner's value instead of
//! overwriting it.
//!
//! [`MemoryStore`] implements the same rules in memory for host tests.

use std::cell::RefCell;
use std::collections::HashMap;

/// Token used to create a key only if it does not exist yet.
pub const CREATE_ONLY_CAS: u32 = u32::MAX;

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Someone else wrote the key since it was read.
    CasMismatch,
    /// The host refused for another reason.
    Host,
}

/// Process-wide byte map with compare-and-swap.
pub trait SharedStore {
    /// The value and its CAS token; `None` when the key is missing.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Write `value`. `cas`: `Some(token)` from a `get`, [`CREATE_ONLY_CAS`]
    /// to create, `None` to overwrite unconditionally.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// Outcome of a CAS update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Written; how many CAS conflicts were retried on the way.
    Written {
        /// Conflicts retried.
        retries: u32,
    },
    /// Every attempt lost a race; nothing was written.
    Exhausted,
    /// The host refused the write.
    Failed,
}

/// Read-modify-write `key` with at most `attempts` tries. `f` gets the current
/// value (`None` when missing) and returns the new value. It may run more than
/// once, so it must not have side effects beyond its return value.
pub fn update<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    attempts: u32,
    mut f: impl FnMut(Option<&[u8]>) -> Vec<u8>,
) -> Update {
    for attempt in 0..attempts.max(1) {
        let current = store.get(key);
        let (new, cas) = match &current {
            Some((bytes, cas)) => (f(Some(bytes)), Some(*cas)),
            None => (f(None), Some(CREATE_ONLY_CAS)),
        };
        match store.set(key, &new, cas) {
            Ok(()) => return Update::Written { retries: attempt },
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host) => return Update::Failed,
        }
    }
    Update::Exhausted
}

/// In-memory [`SharedStore`] with Envoy's semantics, for host tests and
/// benchmarks. Not thread-safe, like a single VM's view.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

impl MemoryStore {
    /// Empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }

    /// Total bytes of keys and values (for memory accounting).
    pub fn bytes(&self) -> usize {
        self.map
            .borrow()
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .sum()
    }

    fn bump(&self) -> u32 {
        let mut c = self.next_cas.borrow_mut();
        *c = c.wrapping_add(1);
        if *c == 0 || *c == CREATE_ONLY_CAS {
            *c = 1;
        }
        *c
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.map.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let token = self.bump();
        let mut map = self.map.borrow_mut();
        match map.get_mut(key) {
            Some(entry) => {
                if let Some(cas) = cas.filter(|c| *c != 0) {
                    if cas != entry.1 {
                        return Err(SetError::CasMismatch);
                    }
                }
                *entry = (value.to_vec(), token);
            }
            None => {
                map.insert(key.to_string(), (value.to_vec(), token));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store where another writer sneaks in before each of the first
    /// `conflicts` writes: the situation two worker VMs create.
    struct Contended {
        inner: MemoryStore,
        conflicts: RefCell<u32>,
    }

    impl SharedStore for Contended {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            let mut left = self.conflicts.borrow_mut();
            if *left > 0 {
                *left -= 1;
                // The other worker adds one to the counter first.
                let cur = self.inner.get(key).map(|(v, _)| v[0]).unwrap_or(0);
                self.inner.set(key, &[cur + 1], None)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    fn add_one(cur: Option<&[u8]>) -> Vec<u8> {
        vec![cur.map(|v| v[0]).unwrap_or(0) + 1]
    }

    #[test]
    fn update_retries_conflicts_and_loses_nothing() {
        let s = Contended {
            inner: MemoryStore::new(),
            conflicts: RefCell::new(3),
        };
        assert_eq!(update(&s, "k", 8, add_one), Update::Written { retries: 3 });
        // 3 foreign increments + ours.
        assert_eq!(s.inner.get("k").unwrap().0, vec![4]);
    }

    #[test]
    fn update_gives_up_after_bounded_attempts() {
        let s = Contended {
            inner: MemoryStore::new(),
            conflicts: RefCell::new(100),
        };
        assert_eq!(update(&s, "k", 4, add_one), Update::Exhausted);
        assert_eq!(
            s.inner.get("k").unwrap().0,
            vec![4],
            "only the foreign writes landed"
        );
    }

    #[test]
    fn creation_race_does_not_overwrite() {
        let s = MemoryStore::new();
        // Worker A saw the key missing; worker B created it meanwhile.
        s.set("k", b"B", None).unwrap();
        assert_eq!(
            s.set("k", b"A", Some(CREATE_ONLY_CAS)),
            Err(SetError::CasMismatch)
        );
        assert_eq!(s.get("k").unwrap().0, b"B");
        // On a missing key the create-only token succeeds.
        assert!(s.set("j", b"A", Some(CREATE_ONLY_CAS)).is_ok());
    }
}
