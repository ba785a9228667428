//! `vigil-pii`: evaluation and benchmark of the detectors.
//!
//! - `vigil-pii eval [--seed N] [--n N] [--presidio FILE [--presidio-threshold S]] [--check]`: precision,
//!   recall and F2 per type on the generated corpus; with `--presidio`, the
//!   same table for Presidio's predictions on the same corpus (JSON lines
//!   `{"i":…,"type":…,"start":…,"end":…}` from `pii/presidio_eval.py`).
//! - `vigil-pii corpus [--seed N] [--n N]`: the corpus as JSON lines on stdout.
//! - `vigil-pii bench [--mb N] [--reps N]`: MB/s per core of the default detector set and
//!   of its parts, on entity-dense prompts and on plain prose.

use std::time::Instant;
use vigil_pii::corpus::{generate, json_escape};
use vigil_pii::eval::{evaluate, misses, Report};
use vigil_pii::scan::DEFAULT_MIN_CONFIDENCE;
use vigil_pii::{Kind, KindSet, Scanner};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn presidio_kind(t: &str) -> Option<Kind> {
    Some(match t {
        "CREDIT_CARD" => Kind::Card,
        "IBAN_CODE" => Kind::Iban,
        "US_SSN" => Kind::Ssn,
        "EMAIL_ADDRESS" => Kind::Email,
        "PHONE_NUMBER" => Kind::Phone,
        "IP_ADDRESS" => Kind::Ip,
        other => return Kind::parse(other),
    })
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("\"{key}\":");
    let rest = line.get(line.find(&k)? + k.len()..)?.trim_start();
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find(['"', ',', '}'])?;
    rest.get(..end)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed: u64 = arg(&args, "--seed", 1001);
    let n: usize = arg(&args, "--n", 4000);
    match args.first().map(String::as_str) {
        Some("corpus") => {
            for (i, s) in generate(seed, n).iter().enumerate() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|l| {
                        format!(
                            "{{\"type\":\"{}\",\"start\":{},\"end\":{}}}",
                            l.kind, l.start, l.end
                        )
                    })
                    .collect();
                println!(
                    "{{\"i\":{i},\"text\":\"{}\",\"labels\":[{}]}}",
                    json_escape(&s.text),
                    labels.join(",")
                );
            }
        }
        Some("eval") => {
            let corpus = generate(seed, n);
            let negs: usize = corpus.iter().map(|s| s.negatives).sum();
            println!("corpus: seed {seed}, {n} prompts, {} entities, {negs} hard negatives (generated; an estimate, not the world)\n", corpus.iter().map(|s| s.labels.len()).sum::<usize>());
            let r = evaluate(&Scanner::default(), &corpus);
            if args.iter().any(|a| a == "--errors") {
                // Synthetic corpus only: printing its values is safe.
                for smp in &corpus {
                    let found = Scanner::default().scan(smp.text.as_bytes());
                    for l in &smp.labels {
                        if !found
                            .iter()
                            .any(|f| f.kind == l.kind && f.start < l.end && l.start < f.end)
                        {
                            println!(
                                "FN {}: {:?} in {:?}",
                                l.kind,
                                smp.text.get(l.start..l.end),
                                smp.text
                            );
                        }
                    }
                    for f in &found {
                        if !smp
                            .labels
                            .iter()
                            .any(|l| f.kind == l.kind && f.start < l.end && l.start < f.end)
                        {
                            println!(
                                "FP {}: {:?} in {:?}",
                                f.kind,
                                smp.text.get(f.start..f.end),
                                smp.text
                            );
                        }
                    }
                }
            }
            print!("{}", r.table("vigil-pii (default detectors)"));
            if let Some(path) = args
                .iter()
                .position(|a| a == "--presidio")
                .and_then(|i| args.get(i + 1))
            {
                let Ok(text) = std::fs::read_to_string(path) else {
                    eprintln!("cannot read {path}");
                    std::process::exit(2);
                };
                let threshold: f64 = arg(&args, "--presidio-threshold", 0.0);
                let mut preds: Vec<Vec<(Kind, usize, usize)>> = vec![Vec::new(); corpus.len()];
                for line in text.lines() {
                    let (Some(i), Some(t), Some(s), Some(e)) = (
                        field(line, "i"),
                        field(line, "type"),
                        field(line, "start"),
                        field(line, "end"),
                    ) else {
                        continue;
                    };
                    let (Ok(i), Some(k), Ok(s), Ok(e)) =
                        (i.parse::<usize>(), presidio_kind(t), s.parse(), e.parse())
                    else {
                        continue;
                    };
                    let score: f64 = field(line, "score")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(1.0);
                    if score < threshold {
                        continue;
                    }
                    if let Some(p) = preds.get_mut(i) {
                        p.push((k, s, e));
                    }
                }
                let mut pr = Report::default();
                for (s, p) in corpus.iter().zip(&preds) {
                    pr.add(s, p);
                }
                println!();
                print!(
                    "{}",
                    pr.table(
                        &format!("Presidio, score >= {threshold} (same corpus; no recognizer for the key types: recall 0)")
                    )
                );
            }
            if args.iter().any(|a| a == "--check") {
                let m = misses(&r);
                if !m.is_empty() {
                    eprintln!("below goal (precision >= 0.98, recall >= 0.95): {m:?}");
                    std::process::exit(1);
                }
                println!("\nall types meet precision >= 0.98 and recall >= 0.95");
            }
        }
        Some("bench") => bench(&args, seed),
        _ => {
            eprintln!("usage: vigil-pii eval [--seed N] [--n N] [--presidio FILE] [--check] [--errors] | corpus [--seed N] [--n N] | bench [--mb N] [--reps N]");
            std::process::exit(2);
        }
    }
}

/// `vigil-pii bench`: one thread, each detector set over the same two texts,
/// `--reps` timed passes each (interleaved, so a burst of load on a shared
/// machine hits every set alike); prints the best and the median pass.
fn bench(args: &[String], seed: u64) {
    let mb: usize = arg(args, "--mb", 32);
    let reps: usize = arg(args, "--reps", 5).max(1);
    // Entity-dense prompt text: the corpus (an entity or a hard negative every ~230 bytes).
    let corpus = generate(seed, 2000);
    let mut dense = Vec::new();
    for s in corpus.iter().cycle() {
        if dense.len() >= mb << 20 {
            break;
        }
        dense.extend_from_slice(s.text.as_bytes());
        dense.push(b'\n');
    }
    let prose =
        "The quick brown fox jumps over the lazy dog while the team reviews the quarterly plan. "
            .repeat((mb << 20) / 88 + 1);
    let sets: [(&str, KindSet); 4] = [
        ("default (all 10 types)", KindSet::all()),
        (
            "numbers (card ssn phone ip)",
            KindSet::of(&[Kind::Card, Kind::Ssn, Kind::Phone, Kind::Ip]),
        ),
        ("text (email iban)", KindSet::of(&[Kind::Email, Kind::Iban])),
        (
            "secrets (aws jwt pem token)",
            KindSet::of(&[Kind::AwsKey, Kind::Jwt, Kind::PrivateKey, Kind::Token]),
        ),
    ];
    let texts: [(&str, &[u8]); 2] = [("entity-dense", &dense), ("prose", prose.as_bytes())];
    // secs[set][text] over the passes.
    let mut secs = vec![vec![Vec::new(); texts.len()]; sets.len()];
    let mut found = vec![vec![0usize; texts.len()]; sets.len()];
    // Warm-up: caches, page faults of the first allocation.
    for (_, set) in &sets {
        for (_, buf) in texts {
            let _ =
                Scanner::new(*set, DEFAULT_MIN_CONFIDENCE).scan(buf.get(..1 << 20).unwrap_or(buf));
        }
    }
    for _ in 0..reps {
        for (si, (_, set)) in sets.iter().enumerate() {
            let s = Scanner::new(*set, DEFAULT_MIN_CONFIDENCE);
            for (ti, (_, buf)) in texts.iter().enumerate() {
                let t = Instant::now();
                let n = s.scan(buf).len();
                let el = t.elapsed().as_secs_f64();
                if let Some(v) = secs.get_mut(si).and_then(|v| v.get_mut(ti)) {
                    v.push(el);
                }
                if let Some(f) = found.get_mut(si).and_then(|v| v.get_mut(ti)) {
                    *f = n;
                }
            }
        }
    }
    println!(
        "vigil-pii bench: one thread, {:.1} MB entity-dense prompts, {:.1} MB prose, {reps} passes; MB/s best (median)",
        dense.len() as f64 / 1e6,
        prose.len() as f64 / 1e6
    );
    println!(
        "{:<30} {:>22} {:>22}",
        "detector set", "entity-dense", "prose"
    );
    for (si, (name, _)) in sets.iter().enumerate() {
        let mut cells = Vec::new();
        for (ti, (_, buf)) in texts.iter().enumerate() {
            let mut v = secs
                .get(si)
                .and_then(|v| v.get(ti))
                .cloned()
                .unwrap_or_default();
            v.sort_by(f64::total_cmp);
            let mbps = |t: f64| buf.len() as f64 / 1e6 / t;
            let best = v.first().copied().map_or(f64::NAN, mbps);
            let med = v.get(v.len() / 2).copied().map_or(f64::NAN, mbps);
            let n = found.get(si).and_then(|f| f.get(ti)).copied().unwrap_or(0);
            cells.push(format!("{best:>7.1} ({med:>6.1}) {n:>6}f"));
        }
        println!(
            "{name:<30} {:>22} {:>22}",
            cells.first().map_or("", String::as_str),
            cells.get(1).map_or("", String::as_str)
        );
    }
    println!(
        "goal: >= 200 MB/s per core for the default set (printed, not asserted; f = findings)"
    );
}
