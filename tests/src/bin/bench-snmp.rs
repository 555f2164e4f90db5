//! `cargo xtask bench snmp`: SNMP v2c GET requests per second answered by
//! the release `custos-snmpd`, from N concurrent managers on loopback UDP,
//! each waiting for its answer before the next request (p50, p99), for a
//! cheap object (sysUpTime.0) and the most expensive one (custosDiskUsage.0,
//! a `statvfs` of every mounted file system per request).

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tests::*;

#[derive(Parser)]
struct Args {
    /// Concurrent managers.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long each measurement lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

const COMMUNITY: &str = "Bench-C0mmunity";

/// A v2c GetRequest for one OID (`arcs` BER-encoded after 1.3), as net-snmp
/// sends it.
fn get_request(request_id: u32, oid_body: &[u8]) -> Vec<u8> {
    let mut varbind = vec![0x06, oid_body.len() as u8];
    varbind.extend_from_slice(oid_body);
    varbind.extend_from_slice(&[0x05, 0x00]);
    let mut list = vec![0x30, (varbind.len() + 2) as u8, 0x30, varbind.len() as u8];
    list.extend(varbind);
    let mut pdu = vec![0x02, 0x04];
    pdu.extend_from_slice(&request_id.to_be_bytes());
    pdu.extend_from_slice(&[0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
    pdu.extend(list);
    let mut body = vec![0x02, 0x01, 0x01, 0x04, COMMUNITY.len() as u8];
    body.extend_from_slice(COMMUNITY.as_bytes());
    body.extend_from_slice(&[0xa0, pdu.len() as u8]);
    body.extend(pdu);
    let mut msg = vec![0x30, body.len() as u8];
    msg.extend(body);
    msg
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Runs `clients` managers for `seconds`; returns (answers, latencies in µs).
fn measure(port: u16, oid_body: &'static [u8], clients: usize, seconds: u64) -> (u64, Vec<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
                sock.connect(("127.0.0.1", port)).expect("connect");
                sock.set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("timeout");
                let mut buf = vec![0u8; 65536];
                let mut lat = Vec::new();
                let mut id = (c as u32) << 24;
                while !stop.load(Ordering::Relaxed) {
                    id = id.wrapping_add(1);
                    let req = get_request(id, oid_body);
                    let t = Instant::now();
                    sock.send(&req).expect("send");
                    // Wait for the answer to this request (skip late ones).
                    loop {
                        match sock.recv(&mut buf) {
                            Ok(n) if buf[..n].windows(4).any(|w| w == id.to_be_bytes()) => {
                                lat.push(t.elapsed().as_micros() as u64);
                                break;
                            }
                            Ok(_) => continue,
                            Err(_) => break,
                        }
                    }
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    all.sort_unstable();
    (all.len() as u64, all)
}

fn main() {
    let args = Args::parse();
    let app = Appliance::start();
    let admin = app.api().login_changing("admin", "admin123", ADMIN_PW);
    admin
        .call(
            "PUT",
            "/api/v1/snmp",
            Some(json!({"enabled": true, "community": COMMUNITY})),
        )
        .ok();
    let d = app.start_snmpd();
    // sysUpTime.0 answered: the agent has read the settings.
    let probe = get_request(1, &[0x2b, 6, 1, 2, 1, 1, 3, 0]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "the agent does not answer");
        sock.send_to(&probe, ("127.0.0.1", d.port)).expect("send");
        if sock.recv(&mut buf).is_ok() {
            break;
        }
    }
    println!(
        "custos-snmpd (release), SNMP v2c GET over loopback UDP, {} managers each waiting for its answer, {} s per object",
        args.clients, args.seconds
    );
    const OBJECTS: [(&str, &[u8]); 2] = [
        ("sysUpTime.0", &[0x2b, 6, 1, 2, 1, 1, 3, 0]),
        (
            "custosDiskUsage.0",
            &[0x2b, 6, 1, 4, 1, 0x81, 0xa8, 0x09, 7, 0],
        ),
    ];
    for (name, oid) in OBJECTS {
        let (n, lat) = measure(d.port, oid, args.clients, args.seconds);
        println!(
            "  GET {name:<18} {:>9.0} requests/s   p50 {} µs   p99 {} µs   ({n} answers)",
            n as f64 / args.seconds as f64,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
        );
    }
}
