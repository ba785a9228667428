//! Shared-data key names, namespaced by configuration identity and format
//! version.
//!
//! Envoy's shared data is one map per `vm_id`, so every Vigil configuration
//! loaded into one Envoy (two listeners, two WasmPlugins, or the old and the
//! new configuration side by side during a plugin update) sees the same keys.
//! Every key this filter writes therefore starts with
//! `vigil.v<SHARED_FORMAT>.<identity>.`, where `identity` is
//! [`crate::config::PluginConfig::identity`] (a hash of the validated
//! configuration document, `instance` included) in hex:
//!
//! - two different configurations never share a lease, a registry, verdicts
//!   or pending windows: each has its own scorer and its own series table;
//! - two byte-identical configurations (same `instance`) are one instance:
//!   their workers cooperate exactly like the workers of one configuration;
//! - a build that changes a record's layout bumps [`SHARED_FORMAT`], so an
//!   old and a new build never read each other's records (before this, a
//!   format bump made each read the other's lease as free and overwrite the
//!   other's registry).
//!
//! Envoy counters and gauges are not shared data: they are Envoy stats named
//! by route and cluster, so request counts carry over a configuration change
//! exactly (each request is counted once, by whichever configuration served
//! it). Scoring state does not: a new configuration judges with its own
//! baselines from its first tick.

/// Version of the shared-data layout (key scheme and records). Bump it with
/// any incompatible change to a shared record. 1 was the unversioned
/// `vigil.*` scheme; 2 adds namespaces and the registry's epochs; 3 adds the
/// list of series with pending data (`dirty`), which the lease holder reads
/// instead of every series' key (a format-2 worker would not announce its
/// merges, so the two must not cooperate); 4 batches the self-baseline
/// checkpoints, [`crate::checkpoints::GROUP`] series per key (`b.<group>`,
/// where format 3 had `b.<id>`).
pub const SHARED_FORMAT: u32 = 4;

/// The keys of one configuration instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// The series registry.
    pub registry: String,
    /// The scorer lease.
    pub lease: String,
    /// The published verdict table.
    pub verdicts: String,
    /// The compact steering view of the verdict table (steered and weighted
    /// routes only; what every worker re-reads each tick).
    pub steering: String,
    /// PII guard counts waiting for the scorer's report.
    pub pii: String,
    /// Observed edges waiting for the scorer's report.
    pub edges: String,
    /// Marker of the `lease_release_after_s` test hook.
    pub lease_released: String,
    /// Ids of the series whose pending key a worker merged into since the
    /// lease holder last took the list ([`crate::dirty`]).
    pub dirty: String,
}

impl Keys {
    /// The keys of configuration `identity`.
    pub fn new(identity: u64) -> Self {
        let prefix = format!("vigil.v{SHARED_FORMAT}.{identity:016x}.");
        let key = |name: &str| format!("{prefix}{name}");
        Keys {
            registry: key("registry"),
            lease: key("lease"),
            verdicts: key("verdicts"),
            steering: key("steering"),
            pii: key("pii"),
            edges: key("edges"),
            lease_released: key("lease_released"),
            dirty: key("dirty"),
            prefix,
        }
    }

    /// The common prefix (`vigil.v4.<identity>.`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Series `id`'s pending observations.
    pub fn delta(&self, id: u32) -> String {
        format!("{}d.{id}", self.prefix)
    }

    /// The self-baseline checkpoints of id group `group`
    /// ([`crate::checkpoints`]).
    pub fn checkpoints(&self, group: u32) -> String {
        format!("{}b.{group}", self.prefix)
    }
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(crate::config::PluginConfig::default().identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_identity_and_format() {
        let a = Keys::new(1);
        let b = Keys::new(2);
        assert_eq!(
            a.lease,
            format!("vigil.v{SHARED_FORMAT}.0000000000000001.lease")
        );
        assert_eq!(
            a.delta(7),
            format!("vigil.v{SHARED_FORMAT}.0000000000000001.d.7")
        );
        for (x, y) in [
            (&a.registry, &b.registry),
            (&a.lease, &b.lease),
            (&a.verdicts, &b.verdicts),
            (&a.pii, &b.pii),
            (&a.edges, &b.edges),
        ] {
            assert_ne!(x, y);
        }
        assert_ne!(a.checkpoints(3), b.checkpoints(3));
        assert!(
            !a.lease.starts_with("vigil.lease"),
            "never the unversioned name"
        );
    }
}
