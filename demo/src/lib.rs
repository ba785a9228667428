//! `vigil-demo`: the whole Vigil loop on one machine (issue 5).
//!
//! Real Envoy with the Vigil filter in `steer` mode reporting to a real `vigil-control`
//! (canary in `enforce` mode), two inference-like upstreams (`demo-upstream`, processes),
//! an open-loop load generator recording every response, a canary fault at a fixed
//! time; a live timeline, a summary table and `target/demo/report.json`.
//!
//! - [`upstream`]: the inference-like HTTP server (`demo-upstream`);
//! - [`procs`]: child processes that die with the demo;
//! - [`baseline`]: what a Flagger-style 1-minute rule would have let through;
//! - [`run`]: the scenario itself.

pub mod baseline;
pub mod procs;
pub mod run;
pub mod upstream;

use std::net::SocketAddr;

/// Error type: a message for a human.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A bind failure turned into a clear message (names the port and what wanted it).
pub fn bind_error(addr: SocketAddr, what: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "port {} ({what}) is already in use on {}: stop what uses it or choose another port",
            addr.port(),
            addr.ip()
        )
        .into()
    } else {
        format!("cannot bind {addr} ({what}): {e}").into()
    }
}

/// Checks that `port` (when not 0) can be bound on 127.0.0.1; `var` names the
/// environment variable that sets it, for the message.
pub fn check_port_free(port: u16, var: &str, what: &str) -> Result<()> {
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "port {port} ({what}) is already in use on 127.0.0.1.\n  Stop what uses it, or choose another port: {var}=<port> make demo  (0 = any free port)"
        )
        .into()),
        Err(e) => Err(format!("cannot bind 127.0.0.1:{port} ({what}, {var}): {e}").into()),
    }
}
