//! HTTP hardening with the real binary on loopback: idle and
//! 1-byte-per-second connections are closed within the configured timeouts
//! while `/healthz` stays fast, every error is JSON, and SIGTERM exits
//! within 5 s even with half-sent requests open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Idle,
    SlowHead,
    SlowBody,
}

struct Conn {
    kind: Kind,
    s: TcpStream,
    opened: Instant,
    closed: Option<Duration>,
    got: Vec<u8>,
    sent: usize,
}

/// The tests of this file run one at a time: the 1 000-connection test
/// measures timeouts, which the other tests' servers would skew on 2 cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const SLOW_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: vigil\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

/// Note the connections the server has closed (and what it sent).
fn poll_closed(conns: &mut [Conn]) {
    let mut buf = [0u8; 4096];
    for c in conns.iter_mut().filter(|c| c.closed.is_none()) {
        loop {
            match c.s.read(&mut buf) {
                Ok(0) => {
                    c.closed = Some(c.opened.elapsed());
                    break;
                }
                Ok(n) => c.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.closed = Some(c.opened.elapsed());
                    break;
                }
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn a_thousand_idle_and_slow_connections_are_closed_in_time_and_healthz_stays_fast() {
    let _serial = serial();
    let data = temp_dir("slow-conns");
    let (header_s, body_s, idle_s): (f64, f64, f64) = (2.0, 2.0, 3.0);
    let srv = Server::start(
        &data,
        None,
        &[
            "--header-timeout-ms",
            "2000",
            "--body-timeout-ms",
            "2000",
            "--idle-timeout-ms",
            "3000",
        ],
    );
    let auth = format!("Bearer {TOKEN}");
    let mut conns = Vec::new();
    for i in 0..1000 {
        let kind = match i % 3 {
            0 => Kind::Idle,
            1 => Kind::SlowHead,
            _ => Kind::SlowBody,
        };
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        if kind == Kind::SlowBody {
            let head = format!(
                "POST /v1/reports HTTP/1.1\r\nhost: vigil\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
            );
            s.write_all(head.as_bytes()).unwrap();
        }
        s.set_nonblocking(true).unwrap();
        conns.push(Conn {
            kind,
            s,
            opened: Instant::now(),
            closed: None,
            got: Vec::new(),
            sent: 0,
        });
        if i % 25 == 0 {
            // Opening 1 000 takes a while on a loaded machine: watch for
            // closures meanwhile so lateness is the server's, not ours.
            poll_closed(&mut conns);
        }
    }
    let opened_all = Instant::now();
    let mut health = Vec::new();
    let mut last_drip = Instant::now() - Duration::from_secs(2);
    while conns.iter().any(|c| c.closed.is_none()) {
        assert!(
            opened_all.elapsed() < Duration::from_secs(15),
            "connections still open after 15 s: {}",
            conns.iter().filter(|c| c.closed.is_none()).count()
        );
        // One byte per second on every slow connection.
        if last_drip.elapsed() >= Duration::from_secs(1) {
            last_drip = Instant::now();
            for c in conns.iter_mut().filter(|c| c.closed.is_none()) {
                let byte: &[u8] = match c.kind {
                    Kind::Idle => continue,
                    Kind::SlowHead => &SLOW_HEAD[c.sent % SLOW_HEAD.len()..][..1],
                    Kind::SlowBody => b"1",
                };
                if c.s.write(byte).is_ok() {
                    c.sent += 1;
                }
            }
        }
        poll_closed(&mut conns);
        let t = Instant::now();
        let (status, _) = http(&srv.addr, "GET", "/healthz", None, &[]);
        health.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    health.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&health, 0.5),
        percentile(&health, 0.99),
        *health.last().unwrap(),
    );
    for (kind, limit) in [
        // An idle connection is closed by whichever comes first: the
        // header-read timer (hyper starts it on a fresh connection) or the
        // idle timer.
        (Kind::Idle, idle_s),
        (Kind::SlowHead, header_s),
        (Kind::SlowBody, body_s),
    ] {
        let mut closed: Vec<f64> = conns
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.closed.unwrap().as_secs_f64())
            .collect();
        // Lateness by opening order: accept lag shows as a late tail.
        let late_first_half = closed
            .iter()
            .take(closed.len() / 2)
            .filter(|t| **t > limit + 0.5)
            .count();
        let late_second_half = closed
            .iter()
            .skip(closed.len() / 2)
            .filter(|t| **t > limit + 0.5)
            .count();
        closed.sort_by(f64::total_cmp);
        println!(
            "{kind:?}: {} connections closed after min {:.2} s, median {:.2} s, p99 {:.2} s, max {:.2} s (timeout {limit} s; >0.5 s late: {late_first_half} of the first half opened, {late_second_half} of the second)",
            closed.len(),
            closed[0],
            percentile(&closed, 0.5),
            percentile(&closed, 0.99),
            closed.last().unwrap()
        );
        // Closed by the timeout: not before it, and within 1.5 s after it.
        assert!(
            closed[0] >= limit.min(header_s) * 0.9,
            "{kind:?} closed too early: {}",
            closed[0]
        );
        assert!(
            *closed.last().unwrap() <= limit + 1.5,
            "{kind:?} closed late: {}",
            closed.last().unwrap()
        );
    }
    for c in conns.iter().filter(|c| c.kind == Kind::SlowBody) {
        let text = String::from_utf8_lossy(&c.got);
        assert!(
            text.starts_with("HTTP/1.1 408") && text.contains("\"field\":\"body\""),
            "{text}"
        );
    }
    println!(
        "/healthz during 1000 idle/slow connections: {} requests, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        health.len()
    );
    assert!(p99 < 50.0, "/healthz p99 {p99:.2} ms (max {max:.2} ms)");
}

#[test]
fn sigterm_exits_within_5_s_with_a_thousand_half_sent_requests() {
    let _serial = serial();
    let data = temp_dir("sigterm");
    let mut srv = Server::start(&data, None, &[]);
    // As many half-sent requests as the connection test's 1 000.
    let mut open = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /v1/canaries HTTP/1.1\r\nhost: vig")
                .unwrap();
        } else {
            s.write_all(
                format!("POST /v1/reports HTTP/1.1\r\nhost: vigil\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{{\"ver").as_bytes(),
            )
            .unwrap();
        }
        open.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = srv.child.id().to_string();
    let t = Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "SIGTERM with 1 000 half-sent requests: exited in {:.2} s ({status})",
        t.elapsed().as_secs_f64()
    );
    assert!(status.success(), "{status}");
    drop(open);
}

#[test]
fn every_error_is_json_with_a_field() {
    let _serial = serial();
    let data = temp_dir("json-errors");
    let srv = Server::start(&data, None, &[]);
    let raw = |bytes: &[u8]| -> (u16, serde_json::Value) {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    };
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nhost: v\r\nconnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let big_head = format!(
        "GET /healthz HTTP/1.1\r\nhost: v\r\nx-big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let many: String = (0..200).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nhost: v\r\n{many}connection: close\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("404", b"GET /nope HTTP/1.1\r\nhost: v\r\nconnection: close\r\n\r\n".to_vec(), 404),
        ("405", b"DELETE /healthz HTTP/1.1\r\nhost: v\r\nconnection: close\r\n\r\n".to_vec(), 405),
        ("405 post", b"PUT /v1/canaries HTTP/1.1\r\nhost: v\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(), 405),
        ("414", long_uri.into_bytes(), 414),
        ("431 size", big_head.into_bytes(), 431),
        ("431 count", many.into_bytes(), 431),
        ("bad utf-8 path", b"GET /v1/canaries/\xff\xfe HTTP/1.1\r\nhost: v\r\nconnection: close\r\n\r\n".to_vec(), 400),
        ("percent bad utf-8", b"GET /v1/canaries/%FF%FE HTTP/1.1\r\nhost: v\r\nconnection: close\r\n\r\n".to_vec(), 400),
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), 400),
    ];
    for (name, bytes, want) in cases {
        let (status, v) = raw(&bytes);
        assert_eq!(status, want, "{name}: {v}");
        assert!(
            v["error"].is_string() && v["field"].is_string(),
            "{name}: not a JSON error: {v}"
        );
    }
}

#[test]
fn over_the_connection_cap_a_connection_gets_503_json_and_the_cap_frees_up() {
    let _serial = serial();
    let data = temp_dir("conn-cap");
    let srv = Server::start(&data, None, &["--max-connections", "10"]);
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, v) = http(&srv.addr, "GET", "/healthz", None, &[]);
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["field"], "connection", "{v}");
    drop(idle);
    // Until the server has seen the ten closes, a poll may be refused too:
    // each refusal is counted, so the metric must equal 1 + those refusals.
    let mut refused_while_freeing = 0;
    let t = Instant::now();
    loop {
        let (status, _) = http(&srv.addr, "GET", "/healthz", None, &[]);
        if status == 200 {
            break;
        }
        if status == 503 {
            refused_while_freeing += 1;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the cap never freed up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = http_raw(&srv.addr, "GET", "/metrics", None, &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(&format!(
            "vigil_control_connections_refused_total {}\n",
            1 + refused_while_freeing
        )),
        "expected 1 + {refused_while_freeing} refusals: {metrics}"
    );
}

#[test]
fn at_a_descriptor_limit_of_256_healthz_is_answered_not_timed_out() {
    let _serial = serial();
    let data = temp_dir("fd-limit");
    // The real binary under `ulimit -n 256`.
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {BIN} serve --listen 127.0.0.1:0 --data {} --credentials {} --header-timeout-ms 6000 --idle-timeout-ms 6000",
            data.display(),
            credentials_file("fd-limit-creds").display()
        ))
        .env("VIGIL_CONTROL_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["msg"] == "connection cap lowered to fit the descriptor limit" {
                    let _ = tx.send(format!("cap {}", v["cap"]));
                }
                if v["msg"] == "listening" {
                    let _ = tx.send(v["addr"].as_str().unwrap().to_string());
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let cap = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(cap, "cap 192");
    // 300 unauthenticated idle sockets: more than the descriptors allow.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (status, v) = http(&addr, "GET", "/healthz", None, &[]);
    let waited = t.elapsed();
    println!(
        "/healthz with 300 idle sockets at ulimit -n 256: {status} in {:.1} ms",
        waited.as_secs_f64() * 1000.0
    );
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["field"], "connection");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // Once the idle sockets time out, it is healthy again.
    let t = Instant::now();
    loop {
        let (status, _) = http(&addr, "GET", "/healthz", None, &[]);
        if status == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "never healthy again");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_keep_alive_connection_idle_after_a_request_is_closed_at_the_idle_timeout() {
    let _serial = serial();
    let data = temp_dir("keepalive-idle");
    let srv = Server::start(
        &data,
        None,
        &["--idle-timeout-ms", "1500", "--header-timeout-ms", "10000"],
    );
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: v\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t = Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    let after = t.elapsed().as_secs_f64();
    println!("keep-alive connection idle after a request: closed after {after:.2} s (idle timeout 1.5 s)");
    assert_eq!(n, 0, "expected the server to close");
    assert!((1.3..3.0).contains(&after), "{after}");
}
