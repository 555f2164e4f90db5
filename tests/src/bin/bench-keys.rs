//! `cargo xtask bench keys`: key retrieval by N concurrent registered hosts
//! over kept-alive mutual-TLS connections on loopback (requests/s, p50, p99),
//! and host registrations per second. Runs against the release build.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use tests::*;

#[derive(Parser)]
struct Args {
    /// Concurrent hosts fetching keys.
    #[arg(long, default_value_t = 16)]
    hosts: usize,
    /// How long the retrieval run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Registrations to time.
    #[arg(long, default_value_t = 200)]
    registrations: usize,
}

struct Host {
    client: reqwest::Client,
}

async fn register(client: &reqwest::Client, enrol: &str, name: &str) -> anyhow::Result<Host> {
    Ok(Host {
        client: register_bench_host(client, enrol, name).await?,
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Appliance::start();
    let _s = recommended_setup(&app);
    let enrol = app.url("enrol").to_owned();
    let keys = app.url("keys").to_owned();
    let ca = reqwest::Certificate::from_pem(app.ca_pem("enrol").as_bytes())?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let enrol_client = reqwest::Client::builder().tls_certs_only([ca]).build()?;

        // Registrations: sequential, one TLS connection kept alive.
        let started = Instant::now();
        for i in 0..args.registrations {
            register(&enrol_client, &enrol, &format!("reg-{i}.bench")).await?;
        }
        let reg_rate = args.registrations as f64 / started.elapsed().as_secs_f64();

        // Key retrieval: N hosts, each on its own kept-alive mTLS connection.
        let mut hosts = vec![];
        for i in 0..args.hosts {
            hosts.push(register(&enrol_client, &enrol, &format!("host-{i}.bench")).await?);
        }
        let url = Arc::new(format!("{keys}/agent/v1/keys/recorder"));
        // Warm-up: one request per host opens its connection.
        for h in &hosts {
            anyhow::ensure!(
                h.client
                    .get(url.as_str())
                    .send()
                    .await?
                    .status()
                    .is_success(),
                "warm-up fetch failed"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = vec![];
        for h in hosts {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match h.client.get(url.as_str()).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let started = Instant::now();
        let mut all = vec![];
        let mut errors = 0;
        for t in tasks {
            let (lat, e) = t.await?;
            all.extend(lat);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_unstable();
        println!(
            "key retrieval: {} hosts, {:.1} s, {} requests, {} errors",
            args.hosts,
            elapsed,
            all.len(),
            errors
        );
        println!("  throughput: {:.0} requests/s", all.len() as f64 / elapsed);
        println!(
            "  latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&all, 0.50) as f64 / 1000.0,
            percentile(&all, 0.99) as f64 / 1000.0,
            all.last().copied().unwrap_or(0) as f64 / 1000.0
        );
        println!(
            "registrations: {} sequential, {:.1} per second",
            args.registrations, reg_rate
        );
        anyhow::ensure!(errors == 0, "{errors} requests failed");
        Ok(())
    })
}
