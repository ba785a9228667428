//! The series registry: which series (route × cluster) exist, and their ids.
//!
//! One shared-data key (the configuration's [`crate::keys::Keys::registry`])
//! holds the table of series names; a series' id is its place in the table,
//! so every worker agrees on ids and the per-series keys (`d.<id>`, `b.<group>`)
//! without coordination. The table never holds more than `max_series` real
//! series: id 0 is the overflow series that takes whatever does not fit. Part
//! of the bound is reserved for the series of managed canaries
//! ([`Capacity`]), so a flood of other routes can never push a canary out of
//! judgement. Workers cache the table and re-read it only when its CAS token
//! changed.
//!
//! Lifecycle: the lease holder evicts series that have been idle for
//! `series_idle_s` ([`Registry::evict`]); their place is free and the next
//! new series takes it. That is also how a canary's reserved places come
//! back when its rollout ends (its series go quiet) — and a canary removed
//! from the configuration changes the configuration identity, so the new
//! configuration starts from an empty table of its own. Every entry carries
//! an *epoch* (unique per registration, from a counter kept in the table), and
//! every pending record in `d.<id>` is tagged with the epoch of the series it
//! belongs to ([`tag`] / [`untag`]): a worker that still writes for an evicted
//! series whose id was reused cannot pour its data into the new series.

use crate::codec::{Reader, Writer};
use crate::shared::{update, SharedStore, Update};
use hashbrown::HashMap;

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

/// Tag a series' pending record with the epoch of the series it belongs to.
pub fn tag(epoch: u64, record: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(epoch);
    w.raw(record);
    w.finish()
}

/// The epoch and record of a tagged pending value (`None` when corrupt).
pub fn untag(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut r = Reader::new(bytes)?;
    let epoch = r.uint()?;
    Some((epoch, r.rest()))
}

/// The decoded table: the next epoch to hand out, then `(name, epoch)` per
/// id; a free place has an empty name (a real name always holds the
/// separator).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Table {
    next_epoch: u64,
    entries: Vec<(Vec<u8>, u64)>,
}

fn encode(t: &Table) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(t.next_epoch);
    w.uint(t.entries.len() as u64);
    for (n, e) in &t.entries {
        w.bytes(n);
        w.uint(*e);
    }
    w.finish()
}

fn decode(bytes: &[u8]) -> Option<Table> {
    let mut r = Reader::new(bytes)?;
    let next_epoch = r.uint()?;
    let n = r.count(2)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.bytes()?.to_vec();
        entries.push((name, r.uint()?));
    }
    r.is_done().then_some(Table {
        next_epoch,
        entries,
    })
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
    key: String,
    names: Vec<Vec<u8>>,
    epochs: Vec<u64>,
    ids: HashMap<Vec<u8>, u32>,
    live: usize,
    cas: Option<u32>,
    changes: u64,
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
    /// A registry kept under shared-data key `key`.
    pub fn new(key: impl Into<String>) -> Self {
        Registry {
            key: key.into(),
            ..Default::default()
        }
    }

    /// Size of the id space (ids `0..len()`, free places included).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True before the first refresh.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Real series (excluding overflow and free places).
    pub fn tracked(&self) -> usize {
        self.live.saturating_sub(1)
    }

    /// Counts changes of membership seen by this view (a series added,
    /// evicted, or its place reused): pairings derived from the table are
    /// stale when it moved.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Id of a series name, if registered.
    pub fn id(&self, name: &[u8]) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// Name of a series id (`None` for a free place).
    pub fn name(&self, id: u32) -> Option<&[u8]> {
        self.names
            .get(id as usize)
            .filter(|n| !n.is_empty())
            .map(Vec::as_slice)
    }

    /// Epoch of the series at `id` (`None` for a free place).
    pub fn epoch(&self, id: u32) -> Option<u64> {
        self.name(id)?;
        self.epochs.get(id as usize).copied()
    }

    /// Epoch of the last series registered at `id`, also after its eviction.
    pub fn last_epoch(&self, id: u32) -> Option<u64> {
        self.epochs.get(id as usize).copied()
    }

    /// Iterate `(id, name)` of registered series.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .map(|(i, n)| (i as u32, n.as_slice()))
    }

    /// Take `table` as the current view; only entries that changed touch
    /// the name index.
    fn adopt(&mut self, table: Table, cas: Option<u32>) {
        let old_len = self.names.len();
        let mut changed = table.entries.len() != old_len;
        for (i, (name, epoch)) in table.entries.iter().enumerate() {
            let same = self.names.get(i) == Some(name) && self.epochs.get(i) == Some(epoch);
            if same {
                continue;
            }
            changed = true;
            if let Some(old) = self.names.get(i).filter(|n| !n.is_empty()) {
                if self.ids.get(old.as_slice()) == Some(&(i as u32)) {
                    self.ids.remove(old.as_slice());
                }
            }
            if !name.is_empty() {
                self.ids.insert(name.clone(), i as u32);
            }
        }
        for old in self.names.iter().skip(table.entries.len()) {
            self.ids.remove(old.as_slice());
        }
        let (names, epochs): (Vec<_>, Vec<_>) = table.entries.into_iter().unzip();
        self.live = names.iter().filter(|n| !n.is_empty()).count();
        self.names = names;
        self.epochs = epochs;
        self.cas = cas;
        if changed {
            self.changes += 1;
        }
    }

    /// Re-read the registry if it changed. Returns true when it changed.
    pub fn refresh<S: SharedStore + ?Sized>(&mut self, store: &S) -> bool {
        match store.get(&self.key) {
            Some((bytes, cas)) if Some(cas) != self.cas => {
                let table = decode(&bytes).unwrap_or_default();
                self.adopt(table, Some(cas));
                true
            }
            _ => false,
        }
    }

    /// Register names not yet known, each `(name, managed)`, within
    /// `capacity`: a free place is reused first, else the table grows.
    /// Returns one [`Registration`] per input name, in order.
    pub fn register<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        wanted: &[(&[u8], bool)],
        capacity: Capacity,
        attempts: u32,
    ) -> Vec<Registration> {
        let mut written: Option<Table> = None;
        let key = self.key.clone();
        let outcome = update(store, &key, attempts, |current| {
            let mut t = current.and_then(decode).unwrap_or_default();
            if t.entries.is_empty() {
                t.entries
                    .push((series_name(OVERFLOW_ROUTE, OVERFLOW_CLUSTER), 0));
                t.next_epoch = t.next_epoch.max(1);
            }
            let mut present: hashbrown::HashSet<Vec<u8>> = t
                .entries
                .iter()
                .filter(|(n, _)| !n.is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            let mut tracked = present.len().saturating_sub(1);
            let mut free = t
                .entries
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| n.is_empty())
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
                .into_iter();
            for &(w, managed) in wanted {
                if tracked < capacity.limit(managed) && !present.contains(w) {
                    present.insert(w.to_vec());
                    let entry = (w.to_vec(), t.next_epoch);
                    t.next_epoch += 1;
                    match free.next().and_then(|i| t.entries.get_mut(i)) {
                        Some(place) => *place = entry,
                        None => t.entries.push(entry),
                    }
                    tracked += 1;
                }
            }
            let bytes = encode(&t);
            written = Some(t);
            bytes
        });
        if let (Update::Written { .. }, Some(t)) = (outcome, written) {
            // Our own write: the next refresh sees a new token and re-checks
            // (cheap: only changed entries touch the index).
            self.adopt(t, None);
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

    /// Free the places of series `(id, epoch)` (the lease holder, for series
    /// idle past `series_idle_s`). A place whose epoch no longer matches (it
    /// was re-registered meanwhile) and the overflow series are left alone.
    /// Returns the ids actually freed (empty when the write failed: the
    /// caller tries again next tick).
    pub fn evict<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        victims: &[(u32, u64)],
        attempts: u32,
    ) -> Vec<u32> {
        if victims.is_empty() {
            return Vec::new();
        }
        let mut written: Option<(Table, Vec<u32>)> = None;
        let key = self.key.clone();
        let outcome = update(store, &key, attempts, |current| {
            let mut t = current.and_then(decode).unwrap_or_default();
            let mut freed = Vec::new();
            for &(id, epoch) in victims {
                if id == OVERFLOW_ID {
                    continue;
                }
                if let Some((name, e)) = t.entries.get_mut(id as usize) {
                    if *e == epoch && !name.is_empty() {
                        name.clear();
                        freed.push(id);
                    }
                }
            }
            let bytes = encode(&t);
            written = Some((t, freed));
            bytes
        });
        match (outcome, written) {
            (Update::Written { .. }, Some((t, freed))) => {
                self.adopt(t, None);
                freed
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;

    const KEY: &str = "vigil.v2.test.registry";

    #[test]
    fn two_workers_agree_on_ids_and_the_bound_holds() {
        let store = MemoryStore::new();
        let (mut a, mut b) = (Registry::new(KEY), Registry::new(KEY));
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
        let mut r = Registry::new(KEY);
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
        store.set(KEY, &[1, 200], None).unwrap();
        let mut r = Registry::new(KEY);
        r.refresh(&store);
        assert!(r.is_empty());
        let n = series_name(b"r", b"c");
        assert_eq!(
            r.register(&store, &[(&n, false)], Capacity::new(10, 0), 4),
            vec![Registration::Id(1)]
        );
    }

    #[test]
    fn idle_series_free_their_place_and_reuse_gets_a_new_epoch() {
        let store = MemoryStore::new();
        let (mut a, mut b) = (Registry::new(KEY), Registry::new(KEY));
        let cap = Capacity::new(2, 0);
        let (n1, n2, n3) = (
            series_name(b"r1", b"c"),
            series_name(b"r2", b"c"),
            series_name(b"r3", b"c"),
        );
        a.register(&store, &[(&n1, false), (&n2, false)], cap, 4);
        assert_eq!(
            a.register(&store, &[(&n3, false)], cap, 4),
            vec![Registration::Full]
        );
        let e1 = a.epoch(1).unwrap();
        b.refresh(&store);
        // A stale epoch evicts nothing; the overflow series is never evicted.
        assert!(b.evict(&store, &[(1, e1 + 100), (0, 0)], 4).is_empty());
        assert_eq!(b.evict(&store, &[(1, e1)], 4), vec![1]);
        assert_eq!(b.tracked(), 1);
        assert_eq!(b.name(1), None);
        assert_eq!(b.id(&n1), None);
        assert!(a.refresh(&store));
        assert_eq!(a.id(&n1), None, "every worker sees the eviction");
        assert_eq!(a.iter().count(), 2, "overflow + r2");
        let changes = a.changes();
        assert_eq!(
            a.register(&store, &[(&n3, false)], cap, 4),
            vec![Registration::Id(1)],
            "the freed place is reused"
        );
        assert!(a.changes() > changes);
        assert_ne!(a.epoch(1), Some(e1), "a reused place has a new epoch");
        assert_eq!(a.len(), 3, "the id space did not grow");
        // The evicted series can come back (elsewhere, new epoch) once there is room.
        a.evict(&store, &[(2, a.epoch(2).unwrap())], 4);
        assert_eq!(
            a.register(&store, &[(&n1, false)], cap, 4),
            vec![Registration::Id(2)]
        );
        b.refresh(&store);
        assert_eq!(b.id(&n1), Some(2));
        assert_eq!(b.id(&n3), Some(1));
        assert_eq!(b.id(&n2), None);
    }

    #[test]
    fn a_flood_that_ages_out_gives_a_later_canary_its_places() {
        let store = MemoryStore::new();
        let mut r = Registry::new(KEY);
        let cap = Capacity::new(8, 2);
        let flood: Vec<Vec<u8>> = (0..10_000)
            .map(|i| series_name(format!("r{i}").as_bytes(), b"c"))
            .collect();
        let wanted: Vec<(&[u8], bool)> = flood.iter().map(|n| (n.as_slice(), false)).collect();
        r.register(&store, &wanted, cap, 4);
        assert_eq!(r.tracked(), 6);
        // A first canary takes the reserved places, then its rollout ends.
        let (c1, s1) = (series_name(b"a", b"canary"), series_name(b"a", b"stable"));
        r.register(&store, &[(&c1, true), (&s1, true)], cap, 4);
        assert_eq!(r.tracked(), 8);
        let (c2, s2) = (series_name(b"b", b"canary"), series_name(b"b", b"stable"));
        assert_eq!(
            r.register(&store, &[(&c2, true), (&s2, true)], cap, 4),
            vec![Registration::Full, Registration::Full],
            "without the lifecycle a later canary lands in overflow"
        );
        // Its series go idle and are evicted: the reservation is back.
        let ended: Vec<(u32, u64)> = [&c1, &s1]
            .iter()
            .filter_map(|n| r.id(n).and_then(|id| Some((id, r.epoch(id)?))))
            .collect();
        assert_eq!(r.evict(&store, &ended, 4).len(), 2);
        let got = r.register(
            &store,
            &[(&c2, true), (&s2, true), (&flood[9_999], false)],
            cap,
            4,
        );
        assert!(
            matches!(got[0], Registration::Id(_)) && matches!(got[1], Registration::Id(_)),
            "{got:?}"
        );
        assert_eq!(
            got[2],
            Registration::Full,
            "unmanaged series stay within their bound"
        );
    }

    #[test]
    fn tagged_records_round_trip_and_refuse_garbage() {
        let t = tag(42, b"\x01abc");
        assert_eq!(untag(&t), Some((42, &b"\x01abc"[..])));
        assert_eq!(untag(b""), None);
        assert_eq!(untag(&[9, 1]), None, "foreign version");
    }
}
