//! `cargo xtask bench abuse`: key retrieval by registered hosts over
//! kept-alive mutual TLS, first undisturbed, then during each attack in
//! turn — parallel bad sign-ins, slow sockets on the web port, a flood of
//! registrations with a wrong secret — with p50, p99 and failed fetches per
//! phase. Loopback only; every phase is bounded in time and in count.
//!
//! The attack runs on its own threads at the lowest CPU priority (nice 19),
//! standing in for the other machine a real attacker uses: sharing this
//! machine's cores at equal priority, the attacking client's own TLS and
//! HTTP work would be measured as the service's slowness whatever the
//! service did. It still takes every cycle the service leaves idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tests::*;
use tokio::io::AsyncReadExt;

#[derive(Parser)]
struct Args {
    /// Registered hosts fetching keys.
    #[arg(long, default_value_t = 16)]
    hosts: usize,
    /// Length of each phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Parallel bad sign-ins.
    #[arg(long, default_value_t = 500)]
    logins: usize,
    /// Slow sockets held open on the web port.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Parallel registrations with a wrong secret.
    #[arg(long, default_value_t = 200)]
    registrations: usize,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Clone, Copy)]
enum Attack {
    None,
    Logins,
    Sockets,
    Registrations,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::None => "no attack",
            Attack::Logins => "bad sign-ins",
            Attack::Sockets => "slow sockets",
            Attack::Registrations => "bad registrations",
        }
    }
}

struct Target {
    web: String,
    web_port: u16,
    enrol: String,
    ca: reqwest::Certificate,
    csr: String,
}

/// Starts `attack`'s workers, which run until `stop`; returns them and the
/// count of attack requests or sockets made.
fn start_attack(
    attack: Attack,
    t: &Arc<Target>,
    a: &Args,
    stop: &Arc<AtomicBool>,
    on: &tokio::runtime::Handle,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    let client = reqwest::Client::builder()
        .tls_certs_only([t.ca.clone()])
        .timeout(Duration::from_secs(30))
        .build()?;
    let workers = match attack {
        Attack::None => 0,
        Attack::Logins => a.logins,
        Attack::Sockets => a.sockets,
        Attack::Registrations => a.registrations,
    };
    for i in 0..workers {
        let (t, stop, count, client) = (t.clone(), stop.clone(), count.clone(), client.clone());
        tasks.push(on.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match attack {
                    Attack::None => return,
                    Attack::Logins => {
                        let r = client
                            .post(format!("{}/api/v1/login", t.web))
                            .json(&json!({"login": "admin", "password": format!("Wrong!{i}")}))
                            .send()
                            .await;
                        if r.is_err() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Attack::Registrations => {
                        let r = client
                            .post(format!("{}/agent/v1/register", t.enrol))
                            .json(
                                &json!({"host_name": format!("evil-{i}.bench"), "domain": DOMAIN,
                                          "shared_secret": "Not-the-Secret1!", "csr": t.csr}),
                            )
                            .send()
                            .await;
                        if r.is_err() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Attack::Sockets => {
                        // Connect and send nothing; once the service cuts
                        // it, connect again.
                        match tokio::net::TcpStream::connect(("127.0.0.1", t.web_port)).await {
                            Ok(mut s) => {
                                let mut b = [0u8; 1];
                                let _ =
                                    tokio::time::timeout(Duration::from_secs(60), s.read(&mut b))
                                        .await;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    Ok((tasks, count))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Appliance::start();
    let _s = recommended_setup(&app);
    let ca = reqwest::Certificate::from_pem(app.ca_pem("enrol").as_bytes())?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let csr = rcgen::CertificateParams::new(vec!["evil.bench".to_string()])?
        .serialize_request(&key)?
        .pem()?;
    let target = Arc::new(Target {
        web: app.url("web").to_owned(),
        web_port: app.port("web"),
        enrol: app.url("enrol").to_owned(),
        ca,
        csr,
    });
    let keys = app.url("keys").to_owned();
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("attacker")
        .on_thread_start(|| {
            let _ =
                thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
        })
        .enable_all()
        .build()?;
    let attack_on = attack_rt.handle().clone();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let enrol_client = reqwest::Client::builder()
            .tls_certs_only([target.ca.clone()])
            .build()?;
        let mut hosts = vec![];
        for i in 0..args.hosts {
            hosts.push(Arc::new(
                register_bench_host(&enrol_client, &target.enrol, &format!("host-{i}.bench")).await?,
            ));
        }
        let url = Arc::new(format!("{keys}/agent/v1/keys/recorder"));
        for h in &hosts {
            anyhow::ensure!(
                h.get(url.as_str()).send().await?.status().is_success(),
                "warm-up fetch failed"
            );
        }
        println!(
            "key retrieval by {} hosts over kept-alive mutual TLS, {} s per phase",
            args.hosts, args.seconds
        );
        let mut total_failures = 0;
        for attack in [
            Attack::None,
            Attack::Logins,
            Attack::Sockets,
            Attack::Registrations,
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let (attackers, made) = start_attack(attack, &target, &args, &stop, &attack_on)?;
            // Let the attack build up before measuring.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let deadline = Instant::now() + Duration::from_secs(args.seconds);
            let mut tasks = vec![];
            for h in &hosts {
                let (h, url) = (h.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = vec![];
                    let mut failures = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match h.get(url.as_str()).send().await {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                                lat.push(t.elapsed().as_micros() as u64);
                            }
                            _ => failures += 1,
                        }
                    }
                    (lat, failures)
                }));
            }
            let mut all = vec![];
            let mut failures = 0;
            for t in tasks {
                let (lat, f) = t.await?;
                all.extend(lat);
                failures += f;
            }
            stop.store(true, Ordering::Relaxed);
            for a in attackers {
                a.abort();
            }
            all.sort_unstable();
            println!(
                "  {:<18} fetches {:>7}  p50 {:>7.2} ms  p99 {:>7.2} ms  failed {:>3}  (attack: {} requests/sockets)",
                attack.name(),
                all.len(),
                percentile(&all, 0.50) as f64 / 1000.0,
                percentile(&all, 0.99) as f64 / 1000.0,
                failures,
                made.load(Ordering::Relaxed)
            );
            total_failures += failures;
            // Let the service shed the attack's connections and pauses.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        anyhow::ensure!(total_failures == 0, "{total_failures} key fetches failed");
        Ok(())
    })
}
