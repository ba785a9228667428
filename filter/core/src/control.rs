//! The filter's side of the control-service protocol, as pure functions.
//!
//! Once per tick the lease holder sends a report (the managed canaries'
//! series, canary verdicts and bounded totals, chunked when large) to
//! `POST /v1/reports`, and reads the canary weights from `GET /v1/routing`.
//! The documents themselves are defined once, in `vigil-wire` (shared with
//! the control service, the bench and the tests); this module adds what is
//! the filter's own: the sidecar identity derived from Envoy's node
//! metadata, and the deterministic weighted split. The glue only moves
//! bytes (`dispatch_http_call`), so a malformed or hostile answer is refused
//! on the host-tested path and never reaches routing.

pub use vigil_wire::routing::{
    parse as parse_routing, Routing, MAX_ROUTING_BYTES, MAX_ROUTING_CANARIES,
};

/// The sidecar identity reports carry, stable per pod across VM reloads,
/// from Envoy's node metadata: `NAME.NAMESPACE` when the node metadata has
/// them (Istio sets both), else the pod part of an Istio node id
/// (`sidecar~IP~POD.NS~NS.svc.cluster.local`), else the node id as it is
/// (Kuma: `mesh:dataplane`; plain Envoy: `--service-node`). `None` when
/// nothing usable is there (the caller keeps the VM's random id). Control
/// characters are dropped and the result is cut to 256 bytes.
pub fn sidecar_identity(
    node_id: Option<&str>,
    pod_name: Option<&str>,
    namespace: Option<&str>,
) -> Option<String> {
    let clean = |s: &str| -> String {
        let mut out = String::new();
        for ch in s.chars().filter(|c| !c.is_control()) {
            if out.len() + ch.len_utf8() > 256 {
                break;
            }
            out.push(ch);
        }
        out
    };
    fn nonempty(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    if let Some(pod) = nonempty(pod_name) {
        let id = match nonempty(namespace) {
            Some(ns) => format!("{pod}.{ns}"),
            None => pod.to_string(),
        };
        return Some(clean(&id)).filter(|s| !s.is_empty());
    }
    let node = nonempty(node_id)?;
    let mut parts = node.split('~');
    let istio_pod = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(pod), Some(_)) if !pod.is_empty() => Some(pod),
        _ => None,
    };
    Some(clean(istio_pod.unwrap_or(node))).filter(|s| !s.is_empty())
}

/// Deterministic weighted split: exactly `percent` of every 100 calls say
/// "canary", spread evenly, with no randomness to go wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    acc: u32,
}

impl Split {
    /// True when this request goes to the canary.
    pub fn to_canary(&mut self, percent: u8) -> bool {
        self.acc += u32::from(percent.min(100));
        if self.acc >= 100 {
            self.acc -= 100;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_node_metadata() {
        assert_eq!(
            sidecar_identity(Some("x"), Some("checkout-7d9f"), Some("shop")).as_deref(),
            Some("checkout-7d9f.shop")
        );
        assert_eq!(
            sidecar_identity(
                Some("sidecar~10.1.2.3~checkout-7d9f.shop~shop.svc.cluster.local"),
                None,
                None
            )
            .as_deref(),
            Some("checkout-7d9f.shop")
        );
        assert_eq!(
            sidecar_identity(Some("default:backend-1.kuma-demo"), None, Some("")).as_deref(),
            Some("default:backend-1.kuma-demo")
        );
        assert_eq!(sidecar_identity(None, Some(" "), None), None);
        assert_eq!(sidecar_identity(Some(""), None, None), None);
        let long = "é".repeat(300);
        let id = sidecar_identity(Some(&long), None, None).unwrap_or_default();
        assert!(id.len() <= 256 && !id.is_empty());
        assert_eq!(
            sidecar_identity(Some("a\nb"), None, None).as_deref(),
            Some("ab")
        );
    }

    #[test]
    fn split_is_exact() {
        for percent in [0u8, 1, 10, 25, 50, 99, 100] {
            let mut s = Split::default();
            let n = (0..1000).filter(|_| s.to_canary(percent)).count();
            assert_eq!(n, percent as usize * 10, "{percent}%");
        }
    }
}
