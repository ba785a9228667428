//! Harness pieces for the self-judgement tests (`tests/tests/self_judgement.rs`): extra
//! routes with their own upstream in one Envoy, a sampler of every watched series'
//! `vigil_state`, and readers of the filter's log lines (state changes, `level_shift`).
//!
//! Every extra route `<name>` matches the path prefix `/<name>/` and goes to a cluster
//! also named `<name>`, so its series is `route=<name> cluster=<name>`: an unmanaged
//! series, judged against its own history (the self path).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::envoy::{add_cluster, routes_mut, Envoy};
use crate::Result;

/// Puts one route per `(name, port)` ahead of the bootstrap's routes: prefix
/// `/<name>/` to a new STATIC cluster `<name>` at `127.0.0.1:<port>`.
pub fn add_self_routes(bootstrap: &mut Value, routes: &[(String, u16)]) -> Result<()> {
    for (name, port) in routes {
        add_cluster(bootstrap, name, *port)?;
    }
    let table = routes_mut(bootstrap)?;
    let mut extra: Vec<Value> = routes
        .iter()
        .map(|(name, _)| {
            json!({
                "name": name,
                "match": { "prefix": format!("/{name}/") },
                "route": { "cluster": name }
            })
        })
        .collect();
    extra.append(table);
    *table = extra;
    Ok(())
}

/// A series to watch: `(route, cluster)`.
pub type SeriesKey = (String, String);

/// One sample of every watched series' `vigil_state` (None: not published yet).
#[derive(Debug, Clone)]
pub struct StateSample {
    /// Time since the run's start.
    pub at: Duration,
    /// States, in the order of the watched series.
    pub states: Vec<Option<f64>>,
    /// `vigil_anomaly_score`, in the same order.
    pub scores: Vec<Option<f64>>,
    /// `vigil_latency_p95_ms` (over the window), in the same order.
    pub p95_ms: Vec<Option<f64>>,
}

/// Reads the watched series' states once.
pub async fn sample_states(envoy: &Envoy, watched: &[SeriesKey], at: Duration) -> StateSample {
    let m = envoy.metrics().await.unwrap_or_default();
    let read = |name: &str| {
        watched
            .iter()
            .map(|(r, c)| m.value(name, &[("route", r), ("cluster", c)]))
            .collect()
    };
    StateSample {
        at,
        states: read("vigil_state"),
        scores: read("vigil_anomaly_score"),
        p95_ms: read("vigil_latency_p95_ms"),
    }
}

/// All samples of a run.
#[derive(Debug, Clone, Default)]
pub struct StateTimeline {
    /// The watched series.
    pub watched: Vec<SeriesKey>,
    /// The samples, in time order.
    pub samples: Vec<StateSample>,
}

impl StateTimeline {
    fn index(&self, route: &str) -> Option<usize> {
        self.watched.iter().position(|(r, _)| r == route)
    }

    /// `(time, state)` of the series on `route`.
    pub fn of(&self, route: &str) -> Vec<(Duration, Option<f64>)> {
        let Some(i) = self.index(route) else {
            return Vec::new();
        };
        self.samples
            .iter()
            .map(|s| (s.at, s.states.get(i).copied().flatten()))
            .collect()
    }

    /// Highest `vigil_anomaly_score` of the series on `route` in `[from, to)`.
    pub fn max_score(&self, route: &str, from: Duration, to: Duration) -> f64 {
        let Some(i) = self.index(route) else {
            return 0.0;
        };
        self.samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .filter_map(|s| s.scores.get(i).copied().flatten())
            .fold(0.0, f64::max)
    }

    /// Median of the sampled window p95 (ms) of the series on `route` in `[from, to)`.
    pub fn median_p95_ms(&self, route: &str, from: Duration, to: Duration) -> Option<f64> {
        let i = self.index(route)?;
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .filter_map(|s| s.p95_ms.get(i).copied().flatten())
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// First time at or after `from` the series on `route` had a state ≥ `state`.
    pub fn first_at_least(&self, route: &str, state: f64, from: Duration) -> Option<Duration> {
        self.of(route)
            .into_iter()
            .find(|(t, s)| *t >= from && s.is_some_and(|v| v >= state - 0.5))
            .map(|(t, _)| t)
    }

    /// Samples of `route` in `[from, to)` whose state was ≥ `state`.
    pub fn count_at_least(&self, route: &str, state: f64, from: Duration, to: Duration) -> usize {
        self.of(route)
            .into_iter()
            .filter(|(t, s)| *t >= from && *t < to && s.is_some_and(|v| v >= state - 0.5))
            .count()
    }

    /// The states of the first watched series on `route` as a compact string, one
    /// letter per sample (`-` none, `i` insufficient, `o` ok, `W` warn, `C` critical).
    pub fn letters(&self, route: &str) -> String {
        self.index(route)
            .map_or_else(String::new, |i| self.letters_at(i))
    }

    /// [`StateTimeline::letters`] of the `i`-th watched series.
    pub fn letters_at(&self, i: usize) -> String {
        self.samples
            .iter()
            .map(
                |s| match s.states.get(i).copied().flatten().map(|v| v.round() as i64) {
                    None => '-',
                    Some(0) => 'i',
                    Some(1) => 'o',
                    Some(2) => 'W',
                    Some(3) => 'C',
                    Some(_) => '?',
                },
            )
            .collect()
    }
}

/// Samples every `every` until `duration` has passed since `start`, calling
/// `on_sample(elapsed)` before each sample (to inject changes at set times).
pub async fn run_timeline(
    envoy: &Envoy,
    watched: Vec<SeriesKey>,
    start: Instant,
    duration: Duration,
    every: Duration,
    mut on_sample: impl FnMut(Duration),
) -> StateTimeline {
    let mut timeline = StateTimeline {
        watched,
        samples: Vec::new(),
    };
    let mut ticker = tokio::time::interval_at(start.into(), every);
    loop {
        ticker.tick().await;
        let at = start.elapsed();
        if at > duration {
            break;
        }
        on_sample(at);
        let s = sample_states(envoy, &timeline.watched, at).await;
        timeline.samples.push(s);
    }
    timeline
}

/// One published state change the filter logged for a series:
/// `vigil: series route=R cluster=C FROM -> TO (score N): …`, or for a managed
/// canary's own self judgement `vigil: self-judgement route=R cluster=C …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// `series` (published) or `self-judgement` (a canary's own).
    pub kind: String,
    /// Previous state name.
    pub from: String,
    /// New state name.
    pub to: String,
    /// The whole log line.
    pub line: String,
}

/// State changes logged for `route`/`cluster`.
pub fn transitions(log: &str, route: &str, cluster: &str) -> Vec<Transition> {
    let mut out = Vec::new();
    for kind in ["series", "self-judgement"] {
        let needle = format!("vigil: {kind} route={route} cluster={cluster} ");
        for line in log.lines() {
            let Some(pos) = line.find(&needle) else {
                continue;
            };
            let rest = line.get(pos + needle.len()..).unwrap_or_default();
            let mut words = rest.split_whitespace();
            let (Some(from), Some("->"), Some(to)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            out.push(Transition {
                kind: kind.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                line: line.to_string(),
            });
        }
    }
    out
}

/// Logged changes of `route`/`cluster` into warn or critical (both kinds).
pub fn alarms(log: &str, route: &str, cluster: &str) -> Vec<Transition> {
    transitions(log, route, cluster)
        .into_iter()
        .filter(|t| t.to == "warn" || t.to == "critical")
        .collect()
}

/// Alarm episodes of the published verdict: changes from a quiet state
/// (`ok`, `insufficient_data`) into warn or critical.
pub fn episodes(log: &str, route: &str, cluster: &str) -> usize {
    transitions(log, route, cluster)
        .iter()
        .filter(|t| t.kind == "series")
        .filter(|t| {
            (t.to == "warn" || t.to == "critical") && t.from != "warn" && t.from != "critical"
        })
        .count()
}

/// `level_shift` events logged for `route`/`cluster`.
pub fn level_shifts(log: &str, route: &str, cluster: &str) -> usize {
    let needle = format!("vigil: level_shift route={route} cluster={cluster}:");
    log.lines().filter(|l| l.contains(&needle)).count()
}
