//! Enrolment hardening (issue 12, items 2 and 7): the agent sends the shared
//! secret only to the CA the operator pinned, reads it from a file or
//! standard input only, new secrets require hosts to be added first, and the
//! key service backs off after failed secrets, answering an unknown domain
//! exactly like a wrong secret.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P384_SHA384,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS proxy with its own CA in front of an enrolment port: it terminates
/// the agent's TLS, records every byte it receives in clear, and forwards
/// them over TLS to the real port.
struct Proxy {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
    /// SHA-256 of the certificate it presents.
    certificate_fingerprint: String,
    _runtime: tokio::runtime::Runtime,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Proxy {
    fn start(upstream_port: u16, upstream_ca_pem: &str) -> Proxy {
        // Its own CA and a server certificate for 127.0.0.1.
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Interception CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let certificate_fingerprint = fingerprint_of_pem(&leaf.pem());
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key"),
            )
            .expect("server config");

        // Upstream: the real port, verified against the real CA.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(upstream_ca_pem.as_bytes()).expect("CA"))
            .expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();

        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (rec, count) = (received.clone(), connections.clone());
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, connector, rec) = (acceptor.clone(), connector.clone(), rec.clone());
                tokio::spawn(async move {
                    let Ok(agent) = acceptor.accept(socket).await else {
                        return;
                    };
                    let upstream_addr = SocketAddr::from(([127, 0, 0, 1], upstream_port));
                    let Ok(tcp) = tokio::net::TcpStream::connect(upstream_addr).await else {
                        return;
                    };
                    let name = ServerName::try_from("127.0.0.1").expect("name");
                    let Ok(upstream) = connector.connect(name, tcp).await else {
                        return;
                    };
                    let (mut agent_read, mut agent_write) = tokio::io::split(agent);
                    let (mut up_read, mut up_write) = tokio::io::split(upstream);
                    let up = async {
                        let mut buf = [0u8; 8192];
                        loop {
                            match agent_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    rec.lock().expect("record").extend_from_slice(&buf[..n]);
                                    if up_write.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = up_write.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut up_read, &mut agent_write).await;
                        let _ = agent_write.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Proxy {
            port,
            received,
            connections,
            certificate_fingerprint,
            _runtime: runtime,
        }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().expect("record")).into_owned()
    }
}

/// `custos-agent register` to `port` with `flags`, the secret on stdin.
fn register(app: &Appliance, port: u16, host: &str, dir: &Path, flags: &[&str]) -> AgentOutput {
    let server = format!("127.0.0.1:{port}");
    let dir = dir.to_str().expect("utf-8 dir");
    let mut args = vec![
        "register",
        "--server",
        &server,
        "--domain",
        DOMAIN,
        "--dir",
        dir,
        "--host-name",
        host,
        "--timeout",
        "10",
    ];
    args.extend_from_slice(flags);
    app.agent_with_input(&args, &format!("{SHARED_SECRET}\n"))
}

#[test]
fn the_shared_secret_goes_only_to_the_pinned_ca() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let real = app.ca_fingerprint("enrol");
    let info = s.admin.get("/api/v1/system").ok();
    assert_eq!(
        info["rsa_ca_fingerprint"],
        real.as_str(),
        "the API prints it"
    );
    let proxy = Proxy::start(app.port("enrol"), &app.ca_pem("enrol"));
    let dir = tempfile::tempdir().expect("tempdir");

    // Without a fingerprint: refused before any connection, saying where to
    // read the fingerprint.
    let out = register(
        &app,
        proxy.port,
        "rec1.example.com",
        dir.path(),
        &["--secret-file", "-"],
    );
    assert_eq!(out.status, 1, "{out:?}");
    for needle in [
        "--ca-fingerprint",
        "dashboard",
        "setinfo show",
        "--insecure-first-contact",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst),
        0,
        "nothing was sent"
    );

    // Through the proxy with the real fingerprint: the CA it relays matches,
    // the chain of its handshake does not; refused, naming both.
    let out = register(
        &app,
        proxy.port,
        "rec1.example.com",
        dir.path(),
        &[
            "--ca-fingerprint",
            &real.to_lowercase(),
            "--secret-file",
            "-",
        ],
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains("CA fingerprint mismatch"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&real), "{}", out.stderr);
    assert!(
        out.stderr.contains(&proxy.certificate_fingerprint),
        "{}",
        out.stderr
    );
    assert!(
        proxy.received().contains("GET /agent/v1/ca"),
        "the proxy was in the path: {:?}",
        proxy.received()
    );
    assert!(
        !proxy.received().contains(SHARED_SECRET),
        "the proxy received the shared secret"
    );
    assert!(!proxy.received().contains("/agent/v1/register"));
    assert!(!dir.path().join("agent.json").exists());

    // A fingerprint that is not this port's CA (the EC one, for 8446):
    // refused, naming both, before the secret is sent.
    let ec = app.ca_fingerprint("enrol-ec");
    let out = register(
        &app,
        app.port("enrol"),
        "rec1.example.com",
        dir.path(),
        &[
            "--ca-fingerprint",
            &ec.replace(':', ""),
            "--secret-file",
            "-",
        ],
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains("CA fingerprint mismatch"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&real) && out.stderr.contains(&ec),
        "{}",
        out.stderr
    );
    let log = s.sys.get("/api/v1/audit?limit=1000").ok().to_string();
    assert!(
        !log.contains("rec1.example.com"),
        "the appliance saw no attempt: {log}"
    );

    // --insecure-first-contact, directly: works and warns with the fingerprint.
    let out = register(
        &app,
        app.port("enrol"),
        "rec1.example.com",
        dir.path(),
        &["--insecure-first-contact", "--secret-file", "-"],
    );
    out.ok();
    assert!(
        out.stderr.contains("warning: --insecure-first-contact"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&real), "{}", out.stderr);
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("agent.json")).expect("agent.json"),
    )
    .expect("json");
    assert_eq!(saved["ca_fingerprint"], real.as_str(), "the pin is saved");
    fetch_key(&app, dir.path(), "recorder", None);

    // The saved pin guards every later connection: another ca.crt is refused.
    std::fs::copy(dir.path().join("ca.crt"), dir.path().join("ca.crt.good")).expect("copy");
    std::fs::write(dir.path().join("ca.crt"), app.ca_pem("enrol-ec")).expect("write");
    let dir_arg = dir.path().to_str().expect("dir");
    let out = app.agent(&["get-key", "recorder", "--dir", dir_arg]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains("not the CA pinned at registration"),
        "{}",
        out.stderr
    );
    let out = app.agent(&["status", "--dir", dir_arg]);
    assert_eq!(out.status, 1, "{out:?}");
    std::fs::rename(dir.path().join("ca.crt.good"), dir.path().join("ca.crt")).expect("rename");
    let out = app.agent(&["status", "--dir", dir_arg]);
    out.ok();
    assert!(
        out.stdout
            .contains(&format!("CA fingerprint (pinned): {real}")),
        "{}",
        out.stdout
    );

    // The right fingerprint, directly, the secret from a file: works.
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SHARED_SECRET}\n")).expect("secret file");
    let dir2 = tempfile::tempdir().expect("tempdir");
    let out = register(
        &app,
        app.port("enrol"),
        "rec2.example.com",
        dir2.path(),
        &[
            "--ca-fingerprint",
            &real,
            "--secret-file",
            secret_file.to_str().expect("path"),
        ],
    );
    out.ok();
    assert!(out.stdout.contains(&real), "{}", out.stdout);
    fetch_key(&app, dir2.path(), "recorder", None);
}

#[test]
fn the_secret_is_never_an_argument_nor_empty() {
    let app = Appliance::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("dir");
    let fp = app.ca_fingerprint("enrol");
    let base = [
        "register",
        "--server",
        "127.0.0.1:1",
        "--domain",
        DOMAIN,
        "--dir",
        dir_arg,
        "--host-name",
        "h.example.com",
        "--ca-fingerprint",
        &fp,
    ];
    for flag in ["--secret", "--shared-secret"] {
        let mut args = base.to_vec();
        args.extend([flag, SHARED_SECRET]);
        let out = app.agent(&args);
        assert_eq!(out.status, 2, "{flag}: {out:?}");
        assert!(out.stderr.contains("unexpected argument"), "{}", out.stderr);
    }
    // An empty secret on stdin, or in a file.
    let mut args = base.to_vec();
    args.extend(["--secret-file", "-"]);
    let out = app.agent_with_input(&args, "\n");
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the shared secret read from standard input is empty"),
        "{}",
        out.stderr
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").expect("write");
    let mut args = base.to_vec();
    args.extend(["--secret-file", empty.to_str().expect("path")]);
    let out = app.agent(&args);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("is empty"), "{}", out.stderr);
    // No --secret-file and no terminal to ask on.
    let out = app.agent(&base);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains("no shared secret: pass --secret-file"),
        "{}",
        out.stderr
    );
    // The environment variable is gone: it is not read.
    let out = std::process::Command::new(bin("custos-agent"))
        .args(base)
        .env("CUSTOS_SHARED_SECRET", SHARED_SECRET)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no shared secret"));
}

#[test]
fn new_secrets_require_hosts_to_be_added_first() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    // The document states the default.
    let doc = app.api().get("/api/openapi.json").ok();
    let field =
        &doc["components"]["schemas"]["SecretSet"]["properties"]["require_hosts_first_added"];
    assert_eq!(field["default"], true, "{field}");

    // A secret set without saying: hosts must be added first.
    let v = s
        .sec
        .call(
            "PUT",
            &format!("/api/v1/domains/{DOMAIN}/registration-secret"),
            Some(json!({"creation_method": "manual", "shared_secret": SHARED_SECRET})),
        )
        .ok();
    assert_eq!(v["require_hosts_first_added"], true, "{v}");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = register_host(&app, "enrol", "rec1.example.com", SHARED_SECRET, dir.path());
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "registration refused: hosts must be added by an administrator before they register"
        ),
        "{}",
        out.stderr
    );
    s.sec
        .post(
            &format!("/api/v1/domains/{DOMAIN}/hosts"),
            json!({"host_name": "rec1.example.com"}),
        )
        .expect(201);
    register_host(&app, "enrol", "rec1.example.com", SHARED_SECRET, dir.path()).ok();
}

/// A registration sent by hand: (status, Retry-After, body bytes).
fn post_registration(
    client: &reqwest::blocking::Client,
    app: &Appliance,
    domain: &str,
    secret: &str,
    host: &str,
) -> (u16, Option<u64>, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
    let csr = CertificateParams::new(vec![host.to_owned()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let r = client
        .post(format!("{}/agent/v1/register", app.url("enrol")))
        .json(&json!({"host_name": host, "domain": domain, "shared_secret": secret, "csr": csr}))
        .send()
        .expect("send");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").parse().expect("seconds"));
    (status, retry, r.bytes().expect("body").to_vec())
}

#[test]
fn failed_secrets_back_off_and_unknown_domains_look_like_wrong_secrets() {
    // A first back-off of 5 s (60 s on the appliance) keeps the test short
    // while leaving ample time to observe it.
    let app = Appliance::start_with(&["--enrol-backoff", "5"]);
    let s = recommended_setup(&app);
    let client = reqwest::blocking::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(app.ca_pem("enrol").as_bytes()).expect("pem"),
        ])
        .build()
        .expect("client");

    // An unknown domain and a wrong secret: byte-identical answers.
    let unknown = post_registration(
        &client,
        &app,
        "NoSuchDomain",
        SHARED_SECRET,
        "h1.example.com",
    );
    let wrong = post_registration(&client, &app, DOMAIN, "Wr0ng-Secret!", "h1.example.com");
    assert_eq!(unknown.0, 403);
    assert_eq!(unknown, wrong, "{}", String::from_utf8_lossy(&wrong.2));
    let body: Value = serde_json::from_slice(&wrong.2).expect("json");
    assert_eq!(
        body["message"],
        "permission denied: registration refused: the domain or the shared secret is wrong"
    );

    // Three more wrong secrets make five from this address: back-off.
    for _ in 0..3 {
        let (status, retry, _) =
            post_registration(&client, &app, DOMAIN, "Wr0ng-Secret!", "h1.example.com");
        assert_eq!((status, retry), (403, None));
    }
    let (status, retry, body) =
        post_registration(&client, &app, DOMAIN, SHARED_SECRET, "rec1.example.com");
    assert_eq!(
        status,
        429,
        "even the right secret: {}",
        String::from_utf8_lossy(&body)
    );
    let retry = retry.expect("Retry-After");
    assert!((1..=5).contains(&retry), "{retry}");
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"], "too_many_requests");
    // The agent says so too.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = register_host(&app, "enrol", "rec1.example.com", SHARED_SECRET, dir.path());
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        out.stderr.contains("too many failed registrations"),
        "{}",
        out.stderr
    );
    let hosts = s.sec.get(&format!("/api/v1/domains/{DOMAIN}/hosts")).ok();
    assert_eq!(hosts.as_array().map(Vec::len), Some(0), "{hosts}");

    // After the back-off the right secret registers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, retry, body) =
            post_registration(&client, &app, DOMAIN, SHARED_SECRET, "rec1.example.com");
        match status {
            200 => break,
            429 if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(retry.expect("Retry-After")));
            }
            _ => panic!("{status}: {}", String::from_utf8_lossy(&body)),
        }
    }
    register_host(&app, "enrol", "rec2.example.com", SHARED_SECRET, dir.path()).ok();
}
