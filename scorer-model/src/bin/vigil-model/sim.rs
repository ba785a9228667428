//! Labelled traffic simulator: named scenarios, one tick per simulated second.
//!
//! Why this exists: the scorer's quality must be measured, and real outages
//! with ground truth are rare. The simulator produces what a sidecar would
//! record for a stable version and a canary of one service — per-tick
//! counters and latency histograms, plus per-host upstream attempt outcomes
//! for Envoy's outlier detection — with the canary's fault windows as labels.
//! Everything is a pure function of (scenario, seed, duration): the same
//! inputs give the same ticks on every machine.
//!
//! The service model (all scenarios): log-normal latency, median 40 ms,
//! sigma 0.35, a per-tick machine-wide factor (sigma 0.05), 0.5 % of requests
//! stalled by up to 150 ms (GC, scheduler); latency grows with load
//! (+15 % per unit of load above nominal). Background failures on both
//! versions: 0.2 % of upstream attempts return 503 and are retried (Istio's
//! default policy: up to 2 retries on 503), 0.1 % return 500 (not retried),
//! 0.02 % are reset. The stable is served by 4 hosts, the canary by 1.

use vigil_scorer::histogram::LatencyHistogram;
use vigil_scorer::window::{Counters, TickDelta};

/// Small deterministic PRNG (xorshift64*), so runs are reproducible
/// without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, including 0).
    pub fn new(seed: u64) -> Self {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1);
        for _ in 0..4 {
            r.next_u64();
        }
        r
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Poisson: Knuth below 30, rounded normal approximation above.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        if mean > 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.uniform();
        while p > limit {
            k += 1;
            p *= self.uniform();
        }
        k
    }
}

/// What a scenario does to the canary while its fault is active.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultEffect {
    /// Extra latency of every canary request, ms (at full strength).
    pub extra_ms: f64,
    /// Share of canary requests answered 500 (not retried).
    pub error_rate: f64,
    /// Share of canary upstream attempts answered 503 (retried up to twice:
    /// the client usually sees success).
    pub retried_error_rate: f64,
    /// Share of canary requests reset by the upstream (not retried).
    pub reset_rate: f64,
    /// Share of canary requests that time out (1 s route timeout, 504).
    pub timeout_rate: f64,
    /// Strength ramps linearly from 0 to 1 over the fault window.
    pub ramp: bool,
    /// Traffic multiplier while active (1 = unchanged).
    pub rate_factor: f64,
    /// Latency multiplier while active (1 = unchanged; ramps with `ramp`).
    pub latency_factor: f64,
    /// The fault hits the whole service (stable and canary), not only the
    /// canary: an alarm on either series detects it.
    pub service: bool,
    /// The effect stays after the labelled window (a lasting level shift:
    /// the window is the onset, alarms after it are false alarms).
    pub persist: bool,
}

/// Background traffic shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Constant rate.
    Flat,
    /// Daily sinusoid: rate × (1 + 0.6 sin), 24 h period, random phase.
    Diurnal,
    /// Surges: rate × 4 for 15 minutes every 2 hours (first after 30 min).
    Surge,
    /// Low traffic: the rate wanders uniformly in 0.5–2 requests/s.
    Low,
    /// Bursts: 15 s at x0.2, 15 s at x1.8 (20 <-> 180 rps at 100 rps).
    Bursty,
    /// Coarse steps: the rate steps between x1 and x1.25 at random
    /// times (every 2–10 min), as a coarse gauge does.
    Steps,
}

/// A named scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Name used on the command line and in reports.
    pub name: &'static str,
    /// One line for `--help` and the README.
    pub about: &'static str,
    /// Total requests per second (stable + canary) at nominal load.
    pub total_rps: f64,
    /// Share of traffic sent to the canary.
    pub canary_weight: f64,
    /// Traffic shape.
    pub load: Load,
    /// Fault effect, `None` for scenarios without a fault.
    pub fault: Option<FaultEffect>,
    /// Fault window length, seconds (at the default run length).
    pub fault_s: u64,
    /// Sigma of the log-normal latency (0.35 by default; 1 = heavy tail).
    pub sigma: f64,
    /// Share of requests that are outliers of `outlier_ms`.
    pub outlier_share: f64,
    /// Latency of an outlier, ms.
    pub outlier_ms: f64,
}

const fn fault(extra_ms: f64, error_rate: f64) -> FaultEffect {
    FaultEffect {
        extra_ms,
        error_rate,
        retried_error_rate: 0.0,
        reset_rate: 0.0,
        timeout_rate: 0.0,
        ramp: false,
        rate_factor: 1.0,
        latency_factor: 1.0,
        service: false,
        persist: false,
    }
}

const fn service(rate_factor: f64, latency_factor: f64) -> FaultEffect {
    FaultEffect {
        rate_factor,
        latency_factor,
        service: true,
        ..fault(0.0, 0.0)
    }
}

/// Every scenario, fault scenarios first.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "latency_step",
        about: "canary +200 ms from one second to the next, 10 min (100 rps, 20 % canary)",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(fault(200.0, 0.0)),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "latency_ramp",
        about: "canary latency degrades linearly to +300 ms over 20 min",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(FaultEffect {
            ramp: true,
            ..fault(300.0, 0.0)
        }),
        fault_s: 1200,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "error_step",
        about: "10 % of canary requests answer 500, 10 min",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(fault(0.0, 0.10)),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "error_burst",
        about: "30 % of canary requests answer 500 for 90 s",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(fault(0.0, 0.30)),
        fault_s: 90,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "resets_timeouts",
        about: "3 % of canary requests reset and 2 % time out (1 s), 10 min",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(FaultEffect {
            reset_rate: 0.03,
            timeout_rate: 0.02,
            ..fault(0.0, 0.0)
        }),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "masked_retries",
        about: "15 % of canary attempts answer 503, retried: the client mostly sees success",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(FaultEffect {
            retried_error_rate: 0.15,
            ..fault(0.0, 0.0)
        }),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "weight_1pct",
        about: "1 % canary weight of 1000 rps: 5 % errors and +100 ms, 10 min",
        total_rps: 1000.0,
        canary_weight: 0.01,
        load: Load::Flat,
        fault: Some(fault(100.0, 0.05)),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "weight_5pct",
        about: "5 % canary weight of 1000 rps: 5 % errors and +100 ms, 10 min",
        total_rps: 1000.0,
        canary_weight: 0.05,
        load: Load::Flat,
        fault: Some(fault(100.0, 0.05)),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "weight_10pct",
        about: "10 % canary weight of 1000 rps: 5 % errors and +100 ms, 10 min",
        total_rps: 1000.0,
        canary_weight: 0.10,
        load: Load::Flat,
        fault: Some(fault(100.0, 0.05)),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "volume_surge",
        about: "service traffic x3 for 10 min (self path: rate surge)",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(service(3.0, 1.0)),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "volume_collapse",
        about: "service traffic drops to 30 % for 10 min (self path: rate collapse)",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(service(0.3, 1.0)),
        fault_s: 600,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "level_shift",
        about: "service latency x1.4 from one second on, lasting; window = the first 5 min",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(FaultEffect {
            persist: true,
            ..service(1.0, 1.4)
        }),
        fault_s: 300,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "slow_drift",
        about: "service latency creeps linearly to x2 over 30 min (self path: drift)",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: Some(FaultEffect {
            ramp: true,
            ..service(1.0, 2.0)
        }),
        fault_s: 1800,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "aa",
        about: "canary identical to stable (A/A), no fault",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Flat,
        fault: None,
        fault_s: 0,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "diurnal",
        about: "daily traffic pattern (x0.4..x1.6, latency follows load), no fault",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Diurnal,
        fault: None,
        fault_s: 0,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "surge",
        about: "traffic x4 for 15 min every 2 h (latency +45 %); each surge is a labelled volume window",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Surge,
        fault: None,
        fault_s: 0,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "bursty_steps",
        about: "traffic steps between x1 and x1.25 every 2-10 min (a coarse gauge), no fault",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Steps,
        fault: None,
        fault_s: 0,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
    Scenario {
        name: "heavy_tail_aa",
        about: "A/A, log-normal sigma 1, 0.5 % 2 s outliers, 20 <-> 180 rps bursts every 15 s",
        total_rps: 100.0,
        canary_weight: 0.2,
        load: Load::Bursty,
        fault: None,
        fault_s: 0,
        sigma: 1.0,
        outlier_share: 0.005,
        outlier_ms: 2000.0,
    },
    Scenario {
        name: "low_traffic",
        about: "0.5-2 requests/s in total, no fault",
        total_rps: 1.0,
        canary_weight: 0.2,
        load: Load::Low,
        fault: None,
        fault_s: 0,
        sigma: 0.35,
        outlier_share: 0.0,
        outlier_ms: 0.0,
    },
];

/// Look a scenario up by name.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Upstream attempt outcomes of one host over one tick, in order
/// (`true` = 5xx or locally originated failure), for outlier detection.
#[derive(Debug, Clone, Default)]
pub struct HostTick {
    /// Outcome of every attempt, in order.
    pub failures: Vec<bool>,
}

/// One simulated second.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// Seconds since the start of the run.
    pub t: u64,
    /// What the canary's sidecar recorded.
    pub canary: TickDelta,
    /// What the stable's sidecar recorded.
    pub stable: TickDelta,
    /// Host 0 is the canary, hosts 1.. the stable's.
    pub hosts: Vec<HostTick>,
    /// True while the canary's fault is active (the label).
    pub fault: bool,
}

/// A scenario run: generates ticks one by one.
#[derive(Debug, Clone)]
pub struct Run {
    scenario: Scenario,
    rng: Rng,
    /// Run length, seconds.
    pub duration_s: u64,
    /// Fault window `[start, end)`, seconds, if the scenario has a fault.
    pub fault_window: Option<(u64, u64)>,
    phase: f64,
    low_rate: f64,
    step_high: bool,
    next_step: u64,
    t: u64,
    canary_hist: LatencyHistogram,
    stable_hist: LatencyHistogram,
}

/// Stable hosts behind the stable version.
pub const STABLE_HOSTS: usize = 4;

impl Run {
    /// A run of `duration_s` seconds. The fault (if any) starts uniformly in
    /// the middle third of the run and lasts the scenario's window, capped
    /// to a quarter of the run for short runs.
    pub fn new(scenario: &Scenario, seed: u64, duration_s: u64) -> Self {
        let mut rng = Rng::new(seed ^ fnv(scenario.name));
        let fault_window = scenario.fault.map(|_| {
            let third = duration_s / 3;
            let start = third + (rng.uniform() * third as f64) as u64;
            let len = scenario.fault_s.min((duration_s / 4).max(1));
            (start, start + len)
        });
        let phase = rng.uniform() * std::f64::consts::TAU;
        Run {
            scenario: *scenario,
            rng,
            duration_s,
            fault_window,
            phase,
            low_rate: 1.0,
            step_high: false,
            next_step: 300,
            t: 0,
            canary_hist: LatencyHistogram::new(),
            stable_hist: LatencyHistogram::new(),
        }
    }

    /// Load multiplier at second `t`.
    fn load(&mut self, t: u64) -> f64 {
        match self.scenario.load {
            Load::Flat => 1.0,
            Load::Diurnal => {
                1.0 + 0.6 * ((t as f64) / 86_400.0 * std::f64::consts::TAU + self.phase).sin()
            }
            Load::Surge => {
                let cycle = (t + 5_400) % 7_200;
                if cycle < 900 {
                    4.0
                } else {
                    1.0
                }
            }
            Load::Bursty => {
                if (t / 15) % 2 == 0 {
                    0.2
                } else {
                    1.8
                }
            }
            Load::Steps => {
                if t >= self.next_step {
                    self.step_high = !self.step_high;
                    self.next_step = t + 120 + (self.rng.uniform() * 480.0) as u64;
                }
                if self.step_high {
                    1.25
                } else {
                    1.0
                }
            }
            Load::Low => {
                // A slow random walk between 0.5 and 2 requests/s.
                if t % 60 == 0 {
                    self.low_rate = 0.5 + 1.5 * self.rng.uniform();
                }
                self.low_rate
            }
        }
    }

    /// The next tick, or `None` at the end of the run. `hosts` is reused.
    /// The labelled windows of this run: the fault window, or for `surge`
    /// every surge (a volume event the self path judges).
    pub fn windows(&self) -> Vec<(u64, u64)> {
        if self.scenario.load == Load::Surge {
            return (0..self.duration_s)
                .step_by(7_200)
                .map(|c| (c + 1_800, c + 2_700))
                .filter(|(a, _)| *a < self.duration_s)
                .collect();
        }
        self.fault_window.into_iter().collect()
    }

    /// Whether an alarm on either series detects this run's windows.
    pub fn service_fault(&self) -> bool {
        self.scenario.load == Load::Surge || self.scenario.fault.is_some_and(|f| f.service)
    }

    pub fn next_tick(&mut self, tick: &mut Tick) -> bool {
        if self.t >= self.duration_s {
            return false;
        }
        let t = self.t;
        self.t += 1;
        let mut load = self.load(t);
        let latency_load = if self.scenario.load == Load::Low {
            1.0
        } else {
            1.0 + 0.15 * (load - 1.0)
        };
        let mut tick_factor = (0.05 * self.rng.normal()).exp() * latency_load;
        let (active, strength) = match (self.fault_window, self.scenario.fault) {
            (Some((a, b)), Some(f)) if t >= a && (t < b || f.persist) => {
                let ramp = ((t - a + 1) as f64 / (b - a).max(1) as f64).min(1.0);
                (t < b, ramp)
            }
            _ => (false, 0.0),
        };
        let mut service_effect = FaultEffect::default();
        if let (true, Some(f)) = (strength > 0.0, self.scenario.fault) {
            if f.service {
                let s = if f.ramp { strength } else { 1.0 };
                load *= f.rate_factor;
                tick_factor *= 1.0 + (f.latency_factor - 1.0) * s;
                service_effect = FaultEffect {
                    extra_ms: f.extra_ms * s,
                    ..f
                };
            }
        }
        let rate = self.scenario.total_rps * load;
        let effect = match (active, self.scenario.fault) {
            (_, Some(f)) if f.service => service_effect,
            (true, Some(f)) => {
                let s = if f.ramp { strength } else { 1.0 };
                FaultEffect {
                    extra_ms: f.extra_ms * s,
                    ..f
                }
            }
            _ => FaultEffect::default(),
        };
        tick.t = t;
        tick.fault = active;
        tick.hosts.resize_with(1 + STABLE_HOSTS, HostTick::default);
        for h in &mut tick.hosts {
            h.failures.clear();
        }
        let canary_rate = rate * self.scenario.canary_weight;
        let stable_rate = rate - canary_rate;
        let n_canary = self.rng.poisson(canary_rate);
        let n_stable = self.rng.poisson(stable_rate);
        let mut canary = Counters::default();
        let mut stable = Counters::default();
        self.canary_hist.clear();
        self.stable_hist.clear();
        for _ in 0..n_canary {
            let (lat, c) = self.request(tick_factor, &effect, tick, 0);
            canary.add(&c);
            self.canary_hist.record_us(lat);
        }
        for _ in 0..n_stable {
            let host = 1 + (self.rng.next_u64() % STABLE_HOSTS as u64) as usize;
            let stable_effect = if service_effect.service {
                service_effect
            } else {
                FaultEffect::default()
            };
            let (lat, c) = self.request(tick_factor, &stable_effect, tick, host);
            stable.add(&c);
            self.stable_hist.record_us(lat);
        }
        tick.canary = TickDelta::from_parts(canary, &self.canary_hist);
        tick.stable = TickDelta::from_parts(stable, &self.stable_hist);
        true
    }

    /// One request: its latency (µs) and its counters.
    fn request(
        &mut self,
        tick_factor: f64,
        effect: &FaultEffect,
        tick: &mut Tick,
        host: usize,
    ) -> (u64, Counters) {
        let rng = &mut self.rng;
        let mut c = Counters {
            requests: 1,
            ..Counters::default()
        };
        let mut latency_ms = 0.0;
        let mut attempts = 0u64;
        let outcome_ok;
        loop {
            attempts += 1;
            // Attempt outcome.
            let r = rng.uniform();
            let p503 = 0.002 + effect.retried_error_rate;
            if r < p503 {
                // Fast 503, retriable.
                latency_ms += 2.0 + rng.uniform() * 3.0;
                push_outcome(tick, host, true);
                if attempts < 3 {
                    continue;
                }
                c.errors += 1;
                outcome_ok = false;
                break;
            }
            let r = rng.uniform();
            let base = 40.0 * (self.scenario.sigma * rng.normal()).exp() * tick_factor;
            let stall = if rng.chance(0.005) {
                rng.uniform() * 150.0
            } else {
                0.0
            } + if rng.chance(self.scenario.outlier_share) {
                self.scenario.outlier_ms
            } else {
                0.0
            };
            let service_ms = base + stall + effect.extra_ms;
            if r < 0.001 + effect.error_rate {
                latency_ms += service_ms;
                push_outcome(tick, host, true);
                c.errors += 1;
                outcome_ok = false;
            } else if r < 0.001 + effect.error_rate + 0.0002 + effect.reset_rate {
                latency_ms += service_ms * rng.uniform();
                push_outcome(tick, host, true);
                c.errors += 1;
                c.resets += 1;
                outcome_ok = false;
            } else if r < 0.001
                + effect.error_rate
                + 0.0002
                + effect.reset_rate
                + effect.timeout_rate
                || service_ms >= 1000.0
            {
                latency_ms += 1000.0;
                push_outcome(tick, host, true);
                c.errors += 1;
                c.timeouts += 1;
                outcome_ok = false;
            } else {
                latency_ms += service_ms;
                push_outcome(tick, host, false);
                outcome_ok = true;
            }
            break;
        }
        let _ = outcome_ok;
        c.retries = attempts - 1;
        let us = (latency_ms * 1000.0).max(50.0) as u64;
        c.latency_sum_us = us;
        (us, c)
    }
}

fn push_outcome(tick: &mut Tick, host: usize, failed: bool) {
    if let Some(h) = tick.hosts.get_mut(host) {
        h.failures.push(failed);
    }
}

/// FNV-1a of a name (mixes the scenario into the seed).
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_deterministic_and_labelled() {
        let s = scenario("error_step").unwrap();
        let collect = |seed| {
            let mut run = Run::new(s, seed, 600);
            let mut tick = Tick::default();
            let mut out = Vec::new();
            while run.next_tick(&mut tick) {
                out.push((tick.canary.clone(), tick.stable.clone(), tick.fault));
            }
            (out, run.fault_window)
        };
        let (a, wa) = collect(7);
        let (b, wb) = collect(7);
        assert_eq!(a, b);
        assert_eq!(wa, wb);
        let (start, end) = wa.unwrap();
        assert!(start >= 200 && end <= 600 && end > start);
        let faulty: u64 = a.iter().filter(|x| x.2).count() as u64;
        assert_eq!(faulty, end - start);
        assert_ne!(collect(8).0, a);
    }
}
