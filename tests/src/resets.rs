//! A client that abandons its own requests: it sends a request, waits a
//! moment, then resets the connection (`SO_LINGER 0`, so the close is a TCP
//! RST) whether or not the answer has arrived. Envoy logs such a request with
//! `DC` (downstream connection termination); Vigil must never count it
//! against the upstream (the "reset attack": a client that resets requests a
//! few milliseconds in makes the slower of two versions look like it fails).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Open-loop: `rps` abandoned requests a second for `duration`, each reset
/// `after` its request was written. Returns how many were sent.
pub async fn reset_requests(
    addr: SocketAddr,
    rps: f64,
    duration: Duration,
    after: Duration,
) -> u64 {
    let interval = Duration::from_secs_f64(1.0 / rps.max(0.1));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut sent = 0u64;
    let mut next = start;
    while next < start + duration {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        sent += 1;
        tasks.spawn(async move {
            let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
            else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let req = b"GET /reset HTTP/1.1\r\nhost: checkout\r\n\r\n";
            if stream.write_all(req).await.is_err() {
                return;
            }
            tokio::time::sleep(after).await;
            // A zero linger never blocks: the close sends RST at once.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    sent
}
