//! # vigil-scorer
//!
//! The judgement at the heart of Vigil, kept free of any proxy dependency so it
//! runs the same inside the Envoy wasm filter, in the control service and in
//! the offline tools, and is tested on the host.
//!
//! Data in: one [`window::TickDelta`] per series per tick (counters plus a
//! sparse latency histogram). State: a [`series::SeriesState`] per series
//! (rolling window and online baseline). Out: a [`verdict::Verdict`] — a score
//! 0–1000, a state, and the numbers behind it — either from the series against
//! its own baseline ([`series::SeriesState::score_self`]) or, for a managed
//! canary, against its stable peer over the same ticks: sequentially, with
//! an anytime-valid e-detector kept between ticks
//! ([`sequential::CanaryMonitor`], what the filter and `eval` use), or with
//! the stateless fixed-window tests of [`peer::score_canary`].
//! Parameters live in a versioned [`model::Model`] (JSON); the small-sample
//! test statistics both judgements share are in [`stats`].

pub mod calibrate;
pub mod histogram;
pub mod model;
pub mod peer;
pub mod ring;
pub mod selfbase;
pub mod selfjudge;
pub mod sequential;
pub mod series;
pub mod stats;
pub mod ttft;
pub mod verdict;
pub mod window;
