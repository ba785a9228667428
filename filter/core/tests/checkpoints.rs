//! Host tests of the batched self-baseline checkpoints (issue 14: an idle
//! tick at 10 000 series wrote 1 000 checkpoint keys, one hostcall each).

// Test code: a panic is the failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cell::RefCell;
use std::collections::HashMap;

use vigil_filter_core::checkpoints::GROUP;
use vigil_filter_core::config::PluginConfig;
use vigil_filter_core::engine::{Level, Worker};
use vigil_filter_core::metrics::MemorySink;
use vigil_filter_core::request::RequestRecord;
use vigil_filter_core::shared::{MemoryStore, SetError, SharedStore};

/// Counts writes per key.
struct Writes<'a> {
    inner: &'a MemoryStore,
    sets: RefCell<HashMap<String, usize>>,
}

impl SharedStore for Writes<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        *self.sets.borrow_mut().entry(key.to_string()).or_default() += 1;
        self.inner.set(key, value, cas)
    }
}

/// 1 000 series: over the 10 ticks of a checkpoint round every series is
/// checkpointed once, in one write per id group (16 keys, not 1 000); a
/// second worker taking the lease resumes them from those records.
#[test]
fn checkpoints_cost_one_shared_write_per_id_group_and_resume_a_new_holder() {
    let n = 1000u64;
    let cfg = PluginConfig::parse(br#"{"mode":"shadow","max_series":1100}"#).unwrap();
    let store = MemoryStore::new();
    let mut sink = MemorySink::default();
    let mut holder = Worker::new(cfg.clone(), 1);
    let mut now = 1_700_000_000_000u64;
    let mut log = |_: Level, _: &str| {};
    for _ in 0..5 {
        for i in 0..n {
            let route = format!("r{i}");
            holder.record(
                Some(route.as_bytes()),
                Some(b"stable"),
                &RequestRecord::new(900, 200, 0, 1),
            );
        }
        now += 1000;
        holder.on_tick(now, &store, &mut sink, &mut log);
    }
    assert!(holder.is_scorer());
    let counted = Writes {
        inner: &store,
        sets: RefCell::default(),
    };
    let before = holder.stats().checkpoints_written;
    for _ in 0..10 {
        now += 1000;
        holder.on_tick(now, &counted, &mut sink, &mut log);
    }
    let prefix = format!("{}b.", holder.keys().prefix());
    let sets = counted.sets.borrow();
    let group_writes: usize = sets
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, n)| n)
        .sum();
    // Ids 0 (overflow) ..= 1000: 1 001 ids in 16 groups.
    let groups = (n as usize + 1).div_ceil(GROUP as usize);
    assert_eq!(
        group_writes, groups,
        "one write per group per round: {sets:?}"
    );
    let written = holder.stats().checkpoints_written - before;
    assert!(
        (n..=n + 1).contains(&written),
        "every series checkpointed once in a round: {written}"
    );
    drop(sets);

    // The holder leaves (a plugin update's on_done); a new worker of the
    // same configuration takes the lease and resumes every baseline.
    holder.on_done(&store, &mut sink);
    let mut next = Worker::new(cfg, 2);
    now += 1000;
    next.on_tick(now, &store, &mut sink, &mut log);
    assert!(next.is_scorer());
    let restored = next.stats().baselines_restored;
    assert!(
        (n..=n + 1).contains(&restored),
        "the new holder resumed {restored} of {n} baselines"
    );
}
