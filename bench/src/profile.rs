//! Where Vigil's per-request cost goes (issue 14 item 5): hostcalls or our own
//! code. Real Envoy at saturation, three variants interleaved: the no-op
//! module, the no-op module in *priced* mode (it makes exactly the hostcalls
//! Vigil's steer mode makes for a healthy unary request, in the same
//! callbacks, and nothing else; `bench/noop-filter`), and Vigil steer.
//!
//! `priced − no-op` is the price of Vigil's hostcalls; `steer − priced` is
//! Vigil's own code (request path, recording, its share of the ticks).
//! `profile.c<N>.sat.hostcall_share` = (priced − no-op) / (steer − no-op),
//! paired per round, median over rounds.

use vigil_e2e::Result;

use crate::dataplane::{run_variants, summarize, DpConfig, Mode, Setup, Variant};
use crate::report::Res;

/// Runs the profile and appends `profile.*`.
pub async fn run(setup: &Setup, cfg: &DpConfig, out: &mut Vec<Res>) -> Result<()> {
    let variants = [Variant::Noop, Variant::NoopPriced, Variant::Steer];
    for (conc, samples) in run_variants(setup, cfg, &variants, &[Mode::Sat]).await? {
        summarize("profile", conc, cfg, &samples, out);
        let (Some(noop), Some(priced), Some(steer)) = (
            samples.get(&(Mode::Sat, Variant::Noop)),
            samples.get(&(Mode::Sat, Variant::NoopPriced)),
            samples.get(&(Mode::Sat, Variant::Steer)),
        ) else {
            continue;
        };
        let mut shares = Vec::new();
        let mut own_us = Vec::new();
        let mut hostcall_us = Vec::new();
        for ((n, p), s) in noop.iter().zip(priced).zip(steer) {
            let hostcalls = p.cpu_us_per_req - n.cpu_us_per_req;
            let vigil = s.cpu_us_per_req - n.cpu_us_per_req;
            hostcall_us.push(hostcalls);
            own_us.push(s.cpu_us_per_req - p.cpu_us_per_req);
            if vigil > 0.0 {
                shares.push(hostcalls / vigil);
            }
        }
        let p = format!("profile.c{conc}.sat");
        out.extend(
            Res::of_samples(format!("{p}.hostcall_share"), &shares, "fraction").map(|r| {
                r.note("(priced no-op - no-op) / (steer - no-op) Envoy CPU per request, paired per round: the part of Vigil's cost that is its hostcalls")
            }),
        );
        out.extend(
            Res::of_samples(format!("{p}.hostcalls_us"), &hostcall_us, "µs/req")
                .map(|r| r.note("priced no-op - no-op: Vigil steer's per-request hostcalls alone")),
        );
        out.extend(
            Res::of_samples(format!("{p}.own_code_us"), &own_us, "µs/req").map(|r| {
                r.note("steer - priced no-op: Vigil's own code per request (ticks included)")
            }),
        );
    }
    Ok(())
}
