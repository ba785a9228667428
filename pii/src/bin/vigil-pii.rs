//! `vigil-pii`: evaluation and benchmark of the detectors.
//!
//! - `vigil-pii eval [--seed N] [--n N] [--presidio FILE [--presidio-threshold S]] [--check]`: precision,
//!   recall and F2 per type on the generated corpus; with `--presidio`, the
//!   same table for Presidio's predictions on the same corpus (JSON lines
//!   `{"i":…,"type":…,"start":…,"end":…}` from `pii/presidio_eval.py`).
//! - `vigil-pii corpus [--seed N] [--n N]`: the corpus as JSON lines on stdout.
//! - `vigil-pii bench [--mb N]`: MB/s per core of the default detector set.

use std::time::Instant;
use vigil_pii::corpus::{generate, json_escape};
use vigil_pii::eval::{evaluate, misses, Report};
use vigil_pii::{Kind, Scanner};

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
        Some("bench") => {
            let mb: usize = arg(&args, "--mb", 64);
            // Realistic prompt text: the corpus, repeated to the size asked.
            let corpus = generate(seed, 2000);
            let mut text = Vec::new();
            for s in corpus.iter().cycle() {
                if text.len() >= mb << 20 {
                    break;
                }
                text.extend_from_slice(s.text.as_bytes());
                text.push(b'\n');
            }
            let plain = "The quick brown fox jumps over the lazy dog while the team reviews the quarterly plan. ".repeat((mb << 20) / 88 + 1);
            let s = Scanner::default();
            for (name, buf) in [
                ("corpus prompts (entity-dense)", text.as_slice()),
                ("plain prose", plain.as_bytes()),
            ] {
                let _ = s.scan(buf.get(..1 << 20).unwrap_or(buf));
                let t = Instant::now();
                let found = s.scan(buf).len();
                let secs = t.elapsed().as_secs_f64();
                let mbps = buf.len() as f64 / 1e6 / secs;
                println!(
                    "{name:<32} {:>8.1} MB/s  ({:.0} ns/KB, {found} findings in {:.1} MB)",
                    mbps,
                    secs * 1e9 / (buf.len() as f64 / 1024.0),
                    buf.len() as f64 / 1e6
                );
            }
            println!("goal: >= 200 MB/s per core (one thread; printed, not asserted)");
        }
        _ => {
            eprintln!("usage: vigil-pii eval [--seed N] [--n N] [--presidio FILE] [--check] [--errors] | corpus [--seed N] [--n N] | bench [--mb N]");
            std::process::exit(2);
        }
    }
}
