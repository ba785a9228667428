//! `vigil-control replay`: placeholder replaced in the one-judge commit.

/// Replay recorded reports (see the one-judge commit).
pub fn main(_reports: &std::path::Path, _canary: &str, _config: Option<&std::path::Path>) -> i32 {
    eprintln!("vigil-control replay: not available in this build");
    2
}
