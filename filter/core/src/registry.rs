//! The series registry: which series (route × cluster) exist, and their ids.
//!
//! One shared-data key (`vigil.registry`) holds the ordered list of series
//! names; a series' id is its position, so every worker agrees on ids and the
//! per-series keys (`vigil.d.<id>`) without coordination. The list only grows,
//! by CAS, and never beyond `max_series` real series: id 0 is the overflow
//! series that takes whatever does not fit. Part of the bound is reserved for
//! the series of managed canaries ([`Capacity`]), so a flood of other routes
//! can never push a canary out of judgement. Workers cache the list and re-read
//! it only when its CAS token changed.

use crate::codec::{Reader, Writer};
use crate::shared::{update, SharedStore, Update};
use hashbrown::HashMap;

/// Shared-data key of the registry.
pub const REGISTRY_KEY: &str = "vigil.registry";
/// Name of the overflow series (id 0).
pub const OVERFLOW_ROUTE: &[u8] = b"overflow";
/// Cluster part of the overflow series' name.
pub const OVERFLOW_CLUSTER: &[u8] = b"overflow";
/// Id of the overflow series.
pub const OVERFLOW_ID: u32 = 0;

/// Separator between the route and cluster parts of a series name.
pub const NAME_SEPARATOR: u8 = 0;

/// Series name: `route NUL cluster`.
pub fn series_name(route: &[u8], cluster: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(route.len() + cluster.len() + 1);
    name.extend_from_slice(route);
    name.push(NAME_SEPARATOR);
    name.extend_from_slice(cluster);
    name
}

/// Split a series name back into route and cluster.
pub fn split_name(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().position(|b| *b == NAME_SEPARATOR) {
        Some(i) => (
            name.get(..i).unwrap_or_default(),
            name.get(i + 1..).unwrap_or_default(),
        ),
        None => (name, &[]),
    }
}

/// Shared-data key holding a series' pending observations.
pub fn delta_key(id: u32) -> String {
    format!("vigil.d.{id}")
}

fn encode(names: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(names.len() as u64);
    for n in names {
        w.bytes(n);
    }
    w.finish()
}

fn decode(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut r = Reader::new(bytes)?;
    let n = r.count(1)?;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(r.bytes()?.to_vec());
    }
    r.is_done().then_some(names)
}

/// How many series the table admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Bound on all real series (`max_series`).
    pub total: usize,
    /// Bound for series that belong to no managed canary; the difference is
    /// reserved for managed ones.
    pub unmanaged: usize,
}

impl Capacity {
    /// `max_series` with `reserved` places kept for managed series (at most
    /// half of the table).
    pub fn new(max_series: usize, reserved: usize) -> Self {
        let reserved = reserved.min(max_series / 2);
        Capacity {
            total: max_series,
            unmanaged: max_series - reserved,
        }
    }

    /// The bound that applies to a series.
    pub fn limit(&self, managed: bool) -> usize {
        if managed {
            self.total
        } else {
            self.unmanaged
        }
    }
}

/// A worker's cached view of the registry.
#[derive(Debug, Default)]
pub struct Registry {
    names: Vec<Vec<u8>>,
    ids: HashMap<Vec<u8>, u32>,
    cas: Option<u32>,
}

/// Result of trying to register one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Registered (or already there) under this id.
    Id(u32),
    /// The table is full: the series belongs in the overflow series.
    Full,
    /// Could not write this tick (contention or host failure): try again next tick.
    Retry,
}

impl Registry {
    /// Number of series including the overflow series.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True before the first refresh.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Real series (excluding overflow).
    pub fn tracked(&self) -> usize {
        self.names.len().saturating_sub(1)
    }

    /// Id of a series name, if registered.
    pub fn id(&self, name: &[u8]) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// Name of a series id.
    pub fn name(&self, id: u32) -> Option<&[u8]> {
        self.names.get(id as usize).map(Vec::as_slice)
    }

    /// Iterate `(id, name)`.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, n.as_slice()))
    }

    fn adopt(&mut self, names: Vec<Vec<u8>>, cas: Option<u32>) {
        let append_only =
            names.len() >= self.names.len() && names.iter().zip(&self.names).all(|(a, b)| a == b);
        if !append_only {
            self.ids.clear();
            self.names.clear();
        }
        for (i, n) in names.iter().enumerate().skip(self.names.len()) {
            self.ids.insert(n.clone(), i as u32);
        }
        self.names = names;
        self.cas = cas;
    }

    /// Re-read the registry if it changed. Returns true when it changed.
    pub fn refresh<S: SharedStore + ?Sized>(&mut self, store: &S) -> bool {
        match store.get(REGISTRY_KEY) {
            Some((bytes, cas)) if Some(cas) != self.cas => {
                let names = decode(&bytes).unwrap_or_default();
                self.adopt(names, Some(cas));
                true
            }
            _ => false,
        }
    }

    /// Register names not yet known, each `(name, managed)`, within
    /// `capacity`. Returns one [`Registration`] per input name, in order.
    pub fn register<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        wanted: &[(&[u8], bool)],
        capacity: Capacity,
        attempts: u32,
    ) -> Vec<Registration> {
        let mut written: Option<Vec<Vec<u8>>> = None;
        let outcome = update(store, REGISTRY_KEY, attempts, |current| {
            let mut names = current.and_then(decode).unwrap_or_default();
            if names.is_empty() {
                names.push(series_name(OVERFLOW_ROUTE, OVERFLOW_CLUSTER));
            }
            let mut present: hashbrown::HashSet<Vec<u8>> = names.iter().cloned().collect();
            for &(w, managed) in wanted {
                let tracked = names.len() - 1;
                if tracked < capacity.limit(managed) && !present.contains(w) {
                    present.insert(w.to_vec());
                    names.push(w.to_vec());
                }
            }
            let bytes = encode(&names);
            written = Some(names);
            bytes
        });
        if let (Update::Written { .. }, Some(names)) = (outcome, written) {
            // Our own write: the next refresh will see a new token and
            // re-check, which is cheap since the list only grew.
            self.adopt(names, None);
        } else {
            return wanted.iter().map(|_| Registration::Retry).collect();
        }
        wanted
            .iter()
            .map(|(w, _)| match self.id(w) {
                Some(id) => Registration::Id(id),
                None => Registration::Full,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;

    #[test]
    fn two_workers_agree_on_ids_and_the_bound_holds() {
        let store = MemoryStore::new();
        let (mut a, mut b) = (Registry::default(), Registry::default());
        let n1 = series_name(b"r1", b"c");
        let n2 = series_name(b"r2", b"c");
        let n3 = series_name(b"r3", b"c");
        let cap = Capacity::new(2, 0);
        assert_eq!(
            a.register(&store, &[(&n1, false)], cap, 4),
            vec![Registration::Id(1)]
        );
        b.refresh(&store);
        assert_eq!(
            b.register(&store, &[(&n2, false), (&n1, false), (&n3, false)], cap, 4),
            vec![Registration::Id(2), Registration::Id(1), Registration::Full]
        );
        assert!(a.refresh(&store));
        assert_eq!(a.id(&n2), Some(2));
        assert_eq!(a.tracked(), 2);
        assert_eq!(
            a.name(0),
            Some(series_name(b"overflow", b"overflow").as_slice())
        );
        assert_eq!(split_name(&n3), (&b"r3"[..], &b"c"[..]));
    }

    #[test]
    fn managed_series_keep_their_reserved_places() {
        let store = MemoryStore::new();
        let mut r = Registry::default();
        let cap = Capacity::new(4, 2);
        let flood: Vec<Vec<u8>> = (0..10)
            .map(|i| series_name(format!("r{i}").as_bytes(), b"c"))
            .collect();
        let wanted: Vec<(&[u8], bool)> = flood.iter().map(|n| (n.as_slice(), false)).collect();
        let got = r.register(&store, &wanted, cap, 4);
        assert_eq!(
            got.iter()
                .filter(|g| matches!(g, Registration::Id(_)))
                .count(),
            2
        );
        let canary = series_name(b"checkout", b"canary");
        let stable = series_name(b"checkout", b"stable");
        let late = series_name(b"late", b"c");
        assert_eq!(
            r.register(
                &store,
                &[(&canary, true), (&late, false), (&stable, true)],
                cap,
                4
            ),
            vec![Registration::Id(3), Registration::Full, Registration::Id(4)]
        );
        assert_eq!(r.tracked(), 4);
        assert_eq!(
            Capacity::new(4, 100).unmanaged,
            2,
            "at most half is reserved"
        );
    }

    #[test]
    fn corrupt_registry_is_replaced_not_trusted() {
        let store = MemoryStore::new();
        store.set(REGISTRY_KEY, &[1, 200], None).unwrap();
        let mut r = Registry::default();
        r.refresh(&store);
        assert!(r.is_empty());
        let n = series_name(b"r", b"c");
        assert_eq!(
            r.register(&store, &[(&n, false)], Capacity::new(10, 0), 4),
            vec![Registration::Id(1)]
        );
    }
}
