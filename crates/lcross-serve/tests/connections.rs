//! The server against slow and half-open clients: every such connection is closed
//! within its timeout, normal requests are answered promptly meanwhile, an announced
//! oversized body is refused before it is sent, and the connection cap holds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use lcross_serve::{Limits, RunningServer, ServeOptions, VectorRegistry};
use serde_json::json;

const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);
const BODY_TIMEOUT: Duration = Duration::from_millis(2500);

fn server(max_connections: usize) -> RunningServer {
    let opts = ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        batch_rows: 4,
        max_queue: 16,
        model_name: Some("tiny".into()),
        limits: Limits { max_body_bytes: 64 * 1024, header_timeout: HEADER_TIMEOUT, body_timeout: BODY_TIMEOUT, max_connections, ..Limits::default() },
    };
    RunningServer::start(tiny_model(), VectorRegistry::new(), &opts).unwrap()
}

/// What a misbehaving client does after connecting.
#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request line and headers a byte every 200 ms (never finishing in time).
    Headers,
    /// Sends whole headers announcing 200 bytes of body, then a byte every 200 ms.
    Body,
}

/// Run one misbehaving client: (how long the server kept the connection, what it sent).
fn misbehave(addr: SocketAddr, how: Slow) -> (Duration, String) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let headers = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    let mut to_send: Vec<u8> = match how {
        Slow::Silent => Vec::new(),
        Slow::Headers => headers.as_bytes().to_vec(),
        Slow::Body => vec![b' '; 200],
    };
    if let Slow::Body = how {
        s.write_all(headers.as_bytes()).unwrap();
    }
    to_send.reverse();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut last_write = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if last_write.elapsed() >= Duration::from_millis(200) {
            if let Some(b) = to_send.pop() {
                // A write may fail once the server has closed: the read below sees the end.
                let _ = s.write_all(&[b]);
            }
            last_write = Instant::now();
        }
        match s.read(&mut buf) {
            Ok(0) => return (start.elapsed(), String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (start.elapsed(), String::from_utf8_lossy(&got).into_owned()),
        }
    }
    panic!("{how:?}: the server kept the connection open for 20 s");
}

#[test]
fn slow_and_half_open_clients_are_closed_in_time_and_others_are_served() {
    let server = server(256);
    let addr = server.addr;
    let kinds = [(Slow::Silent, 60), (Slow::Headers, 30), (Slow::Body, 30)];
    let clients: Vec<_> =
        kinds.iter().flat_map(|&(how, n)| (0..n).map(move |_| how)).map(|how| std::thread::spawn(move || (how, misbehave(addr, how)))).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile, ordinary clients are answered promptly.
    let c = client();
    for i in 0..5 {
        let t = Instant::now();
        let (status, body) = get(&c, &format!("http://{addr}/health"));
        assert_eq!(status, 200, "{body}");
        let (status, body) = post(
            &c,
            &format!("{}/completions", server.base_url()),
            &json!({"model": "tiny", "prompt": format!("hello {i}"), "max_tokens": 4, "temperature": 0}),
        );
        assert_eq!(status, 200, "{body}");
        assert!(t.elapsed() < Duration::from_secs(3), "request {i} took {:?} with 120 slow clients connected", t.elapsed());
    }
    for h in clients {
        let (how, (held, reply)) = h.join().unwrap();
        let limit = match how {
            Slow::Silent | Slow::Headers => HEADER_TIMEOUT,
            Slow::Body => HEADER_TIMEOUT + BODY_TIMEOUT,
        };
        assert!(held >= limit.mul_f64(0.5) && held < limit + Duration::from_secs(2), "{how:?}: held {held:?} (timeout {limit:?})");
        if let Slow::Body = how {
            assert!(reply.starts_with("HTTP/1.1 408") && reply.contains("request_timeout"), "{reply}");
        }
    }
}

#[test]
fn an_announced_oversized_body_is_refused_before_it_is_sent() {
    let server = server(16);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413") && reply.contains("request_too_large") && reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(1), "answered and closed in {:?}, not after a body timeout", t.elapsed());
    // A chunked body (no length announced) that grows past the limit is refused as well.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
    for _ in 0..10 {
        // The server may answer and close before every chunk is sent.
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413") && reply.contains("request_too_large"), "{reply}");
}

#[test]
fn past_the_connection_cap_clients_wait_until_a_slot_frees() {
    let server = server(3);
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (status, _) = get(&client(), &format!("http://{}/health", server.addr));
    let waited = t.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited >= HEADER_TIMEOUT.mul_f64(0.5) && waited < HEADER_TIMEOUT + Duration::from_secs(2),
        "waited {waited:?}: the three idle connections held every slot until their header timeout"
    );
    drop(idle);
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let opts = ServeOptions { addr, ..ServeOptions::default() };
    let e = RunningServer::start(tiny_model(), VectorRegistry::new(), &opts).err().expect("the port is taken").to_string();
    assert!(e.contains(&addr.to_string()) && e.contains("--port"), "{e}");
}
