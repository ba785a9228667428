//! Child processes (vigil-control, the upstreams) that never outlive the demo: killed on
//! drop, and by the kernel if the demo dies (`PR_SET_PDEATHSIG`).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;
use vigil_e2e::envoy::die_with_parent;

/// A running child with its log file.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Finds a sibling binary of the running executable (same cargo target directory), or
/// the path in `env_var`.
pub fn sibling_binary(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} does not exist", p.display()).into())
        };
    }
    let exe = std::env::current_exe()?;
    let mut dirs = vec![];
    if let Some(d) = exe.parent() {
        dirs.push(d.to_path_buf());
        if let Some(pp) = d.parent() {
            dirs.push(pp.to_path_buf()); // target/debug/deps/.. for test binaries
        }
    }
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "{name} not found next to {}: build it (`cargo build -p {}`) or set {env_var}",
        exe.display(),
        if name == "vigil-control" {
            "vigil-control"
        } else {
            "vigil-demo"
        }
    )
    .into())
}

impl Proc {
    /// Starts `command` with stdout and stderr into `log`, then waits (bounded) for a
    /// `{"msg":"listening","addr":"…"}` line in the log and returns the address.
    pub async fn start_listening(
        name: &str,
        mut command: Command,
        log: &Path,
        timeout: Duration,
    ) -> Result<(Self, SocketAddr)> {
        let file = File::create(log)?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        let mut p = Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if v.get("msg").and_then(|m| m.as_str()) == Some("listening") {
                        if let Some(addr) = v
                            .get("addr")
                            .and_then(|a| a.as_str())
                            .and_then(|a| a.parse().ok())
                        {
                            return Ok((p, addr));
                        }
                    }
                }
            }
            if let Some(status) = p.child.try_wait()? {
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "{name} exited ({status}) before listening; log {}:\n{}",
                    log.display(),
                    tail.join("\n")
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} not listening within {timeout:?}; log {}",
                    log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Stops the process (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
