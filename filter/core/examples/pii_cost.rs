//! Host harness for the PII guard's per-request cost: drives [`BodyGuard`]
//! the way the glue does in `detect` (or `redact`) on the bench's chat
//! prompt (bench/src/pii.rs `prompt`), `N` requests, so an instruction
//! count (`valgrind --tool=callgrind`) divided by `N` is the pure part of
//! the Envoy-side cost per request.
//!
//! `cargo run --release -p vigil-filter-core --example pii_cost -- [size] [n] [detect|redact] [chunk]`

use vigil_filter_core::pii_config::{PiiAction, RoutePolicy};
use vigil_filter_core::pii_guard::BodyGuard;

fn prompt(size: usize) -> Vec<u8> {
    let mut content = String::from(
        "Customer ann.lee@corp.example.com (+1 415 555 0100) asks about card 4111 1111 1111 1111. ",
    );
    while content.len() + 80 < size {
        content.push_str(
            "The quarterly review covers shipping delays, refunds and the new loyalty tier. ",
        );
    }
    serde_json::json!({ "model": "m", "messages": [{ "role": "user", "content": content }] })
        .to_string()
        .into_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let size = arg(1, 16 * 1024);
    let n = arg(2, 100);
    let redact = args.get(3).is_some_and(|s| s == "redact");
    let chunk = arg(4, usize::MAX).max(1);
    let body = prompt(size);
    let mut policy = RoutePolicy::new(
        "checkout",
        if redact {
            PiiAction::Redact
        } else {
            PiiAction::Detect
        },
    );
    policy.max_inspect_bytes = 1 << 20;
    let mut found = 0;
    for _ in 0..n {
        let mut g = BodyGuard::new(&policy, Some(b"application/json"));
        if redact {
            let _ = std::hint::black_box(g.decide(&body, false));
        } else {
            for c in body.chunks(chunk) {
                g.feed(std::hint::black_box(c));
            }
            g.end();
        }
        found += g.findings().len();
    }
    println!("{} bytes, {n} requests, {found} findings", body.len());
}
