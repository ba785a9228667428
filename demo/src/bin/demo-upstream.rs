//! `demo-upstream --name stable|canary [--listen 127.0.0.1:0] [--base-ms 60]`: an
//! inference-like HTTP backend (see `vigil_demo::upstream`). Logs
//! `{"msg":"listening","addr":"…"}` on stderr once bound; faults switch at run time with
//! `POST /admin/fault?latency_mult=3&error_ratio=0.05`.

use std::net::SocketAddr;
use std::process::ExitCode;

use vigil_demo::upstream::InferenceUpstream;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut name = "upstream".to_string();
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut base_ms = 60.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        let ok = match (a.as_str(), v) {
            ("--name", Some(v)) => {
                name = v;
                true
            }
            ("--listen", Some(v)) => v.parse().map(|x| listen = x).is_ok(),
            ("--base-ms", Some(v)) => v.parse().map(|x| base_ms = x).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("usage: demo-upstream --name NAME [--listen ADDR] [--base-ms MS]");
            return ExitCode::from(2);
        }
    }
    let mut up = match InferenceUpstream::start(&name, listen, base_ms).await {
        Ok(u) => u,
        Err(e) => {
            eprintln!(
                "{{\"msg\":\"error\",\"error\":{}}}",
                serde_json::Value::from(e.to_string())
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "{{\"msg\":\"listening\",\"name\":\"{name}\",\"addr\":\"{}\"}}",
        up.addr()
    );
    tokio::select! {
        _ = up.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
