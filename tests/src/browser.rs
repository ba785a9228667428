//! Child processes read line by line, and the Chromium driver built on them: Debian's
//! `chromium` driven by the `playwright-core` scripts in `tests/browser/` (installed by
//! `scripts/setup.sh`). Used by the dashboard tests (`tests/tests/dashboard_browser.rs`,
//! `demo/tests/dashboard.rs`).
//!
//! A script talks to its test through stdout lines (`RESULT {json}` at the end, other
//! lines as progress) and exits non-zero on any failed check.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::{repo_root, Result};

/// `CHROMIUM`, or Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `tests/browser`, where the scripts and their `node_modules` live.
pub fn browser_dir() -> PathBuf {
    repo_root().join("tests/browser")
}

/// What [`LineChild::next`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// One stdout line.
    Line(String),
    /// Nothing within the wait.
    Idle,
    /// Stdout closed (the process ended or closed it).
    Closed,
}

/// A child process whose stdout is read line by line on a thread; stderr is inherited
/// (it shows in the test output). Killed on drop if still running.
#[derive(Debug)]
pub struct LineChild {
    name: String,
    child: Child,
    lines: Receiver<String>,
    closed: bool,
}

impl LineChild {
    /// Starts `cmd` with stdout piped.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("{name}: no stdout"))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            child,
            lines,
            closed: false,
        })
    }

    /// The next stdout line, waiting at most `wait`.
    pub fn next(&mut self, wait: Duration) -> Next {
        if self.closed {
            return Next::Closed;
        }
        match self.lines.recv_timeout(wait) {
            Ok(l) => Next::Line(l),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                Next::Closed
            }
        }
    }

    /// Whether stdout has closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Waits for the exit, at most `timeout` (then kills it and fails).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!("{} did not exit within {timeout:?}", self.name).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `tests/browser/<script>` with node, with `CHROMIUM` set and `env` added.
/// Fails with what to install when playwright-core, chromium or node is missing.
pub fn run_script<K, V>(script: &str, env: impl IntoIterator<Item = (K, V)>) -> Result<LineChild>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Err(
            "tests/browser/node_modules/playwright-core is missing: run scripts/setup.sh \
                    (npm ci in tests/browser)"
                .into(),
        );
    }
    let chromium = chromium();
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "{} is missing: run scripts/setup.sh (apt-get install chromium)",
            chromium.display()
        )
        .into());
    }
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("CHROMIUM", &chromium)
        .envs(env);
    LineChild::spawn(script, cmd)
        .map_err(|e| format!("{e}: install nodejs (scripts/setup.sh)").into())
}
