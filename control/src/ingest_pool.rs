//! The ingest threads: big reports are parsed and merged here, at a lower
//! CPU priority than everything else in the service.
//!
//! Why this exists: parsing and merging reports is the service's bulk work
//! (≥ 10⁶ series updates/s is the goal), while `GET /v1/routing` answers
//! must stay quick for every sidecar that polls. On tokio's blocking pool
//! the parse competed as an equal with the async workers that answer
//! routing, so under ingest a routing read waited behind whole reports
//! (p99 ×20 its idle value). Here a fixed set of threads (one per core)
//! takes jobs from a bounded queue — a full queue holds the request, which
//! is backpressure on the sender's connection, not a refusal — and runs
//! them at `nice` [`NICE`] (Linux: per thread), so the scheduler lets the
//! async workers (routing, health, operator calls) preempt them whenever
//! they have work. Throughput is unchanged on an otherwise idle machine:
//! priority only decides who waits when the cores are all busy.
//!
//! The analysis tick and SQLite work stay on tokio's blocking pool, at
//! normal priority.

use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// How much nicer than the rest of the service the ingest threads are.
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A bounded pool of low-priority threads.
pub struct IngestPool {
    jobs: mpsc::Sender<Job>,
}

impl IngestPool {
    /// Start `threads` threads (at least one) behind a queue of `queue`
    /// jobs.
    pub fn start(threads: usize, queue: usize) -> std::io::Result<IngestPool> {
        let (tx, rx) = mpsc::channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("vigil-ingest-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // One thread waits on the queue, the others on the
                        // lock; a job is run after the lock is released.
                        let job = match rx.lock() {
                            Ok(mut r) => r.blocking_recv(),
                            Err(_) => None,
                        };
                        match job {
                            Some(job) => job(),
                            None => break,
                        }
                    }
                })?;
        }
        Ok(IngestPool { jobs: tx })
    }

    /// One thread per available core.
    pub fn per_core() -> std::io::Result<IngestPool> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        IngestPool::start(cores, 4 * cores)
    }

    /// Run `f` on an ingest thread and await its result (`None` if the
    /// pool has stopped or `f` panicked).
    pub async fn run<T, F>(&self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }
}

/// Lower the calling thread's CPU priority by [`NICE`] (best effort: a
/// platform without per-thread priorities keeps the default).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let now = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        let _ = rustix::process::setpriority_process(Some(tid), now.saturating_add(NICE));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[cfg(not(target_os = "linux"))]
    fn nice() -> i32 {
        0
    }

    #[tokio::test]
    async fn jobs_run_on_nicer_threads_and_answer() {
        let pool = IngestPool::start(2, 2).unwrap();
        let base = nice();
        for i in 0..8u64 {
            let (v, name, job_nice) = pool
                .run(move || {
                    let name = std::thread::current().name().map(str::to_string);
                    (i * 2, name, nice())
                })
                .await
                .unwrap();
            assert_eq!(v, i * 2);
            assert!(name.unwrap().starts_with("vigil-ingest-"));
            if cfg!(target_os = "linux") {
                assert_eq!(job_nice, (base + NICE).min(19));
            }
        }
    }
}
