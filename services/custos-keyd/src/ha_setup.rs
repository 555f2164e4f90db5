//! The HA setup flow (§11), both sides, and the HTTPS client the nodes
//! speak to each other with.
//!
//! 1. **Join** (`POST /api/v1/ha/join` on the failover; the CLI's
//!    `convert2failover`): the failover reaches the primary's HTTPS API,
//!    which must present the CA whose fingerprint the operator copied from
//!    the primary's dashboard (nothing, credentials included, is sent
//!    before that check); signs in with a System Administrator's
//!    credentials; registers with a CSR (its key never leaves it) and gets
//!    its node certificate; then, over the control API with that
//!    certificate, receives the group's master key. It keeps all of it
//!    beside its store (`Store::join_group`) and restarts.
//! 2. **Config Replication** (`POST /api/v1/ha/nodes/{name}/replication`
//!    on the primary): the primary makes and starts its own PostgreSQL if
//!    it has none, moves its store there from SQLite (no acknowledged write
//!    lost: `Store::move_to_postgres`), and tells the failover, over the
//!    control API, to replicate.
//! 3. **Replicate** (`POST /ha/v1/replicate` on the failover, from its
//!    primary only): a base backup of the primary's cluster over TLS with
//!    the node certificate, the cluster started as a standby streaming
//!    from it, the store named there, and a restart: the failover then
//!    serves the group's keys, read-only, under its own server certificate
//!    from the group's CA.
//!
//! The node's PostgreSQL runs as the key service's own child process (the
//! key service starts it before it opens the store), so setting HA up needs
//! no privilege the service does not have.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use appliance::pgnode::{NodeTls, PgNode};
use appliance::pki::{CaKind, Identity};
use appliance::secret::{SecretBytes, SecretString};
use appliance::store::{Backend, JoinedPrimary};
use appliance::{Error, Store};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::tls::{Suites, provider};

/// A node-to-node or join call that takes longer is abandoned.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A base backup may take this long (the whole store, over the network).
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(900);

/// Where a call goes: the address to connect to, the name the server's
/// certificate must carry, and the TLS to speak.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub server_name: String,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Why a call to another node failed, in words for the operator.
#[derive(Debug)]
pub enum CallError {
    /// Could not connect, or TLS failed: the peer is not the one expected
    /// or not reachable.
    Unreachable(String),
    /// The peer answered with an error status.
    Refused { status: u16, body: Value },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => f.write_str(why),
            CallError::Refused { status, body } => {
                let message = body["message"].as_str().unwrap_or("");
                write!(f, "it answered {status}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// One HTTPS request with a JSON body, one JSON answer (HTTP/1.1, one
/// connection per call: these calls are rare).
pub async fn call(
    to: &Target,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, CallError> {
    let run = async {
        let tcp = tokio::net::TcpStream::connect(to.addr)
            .await
            .map_err(|e| CallError::Unreachable(format!("connecting to {}: {e}", to.addr)))?;
        let name = ServerName::try_from(to.server_name.clone()).map_err(|_| {
            CallError::Unreachable(format!("{} is not a valid server name", to.server_name))
        })?;
        let tls = tokio_rustls::TlsConnector::from(to.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| CallError::Unreachable(format!("TLS with {}: {e}", to.addr)))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| CallError::Unreachable(format!("HTTP with {}: {e}", to.addr)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Bytes::new(),
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, to.server_name.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(payload))
            .map_err(|e| CallError::Unreachable(format!("request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| CallError::Unreachable(format!("HTTP with {}: {e}", to.addr)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CallError::Unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(CallError::Refused {
                status,
                body: value,
            })
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Unreachable(format!(
            "{} did not answer within {} s",
            to.addr,
            timeout.as_secs()
        ))),
    }
}

/// `AB:CD:…` or `abcd…` as the upper-case hex digits alone.
pub fn normalise_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// Accepts the server only when its chain carries the CA of the pinned
/// fingerprint and the server certificate verifies under that CA for the
/// name asked (trust on the operator's word, checked before anything is
/// sent). What was seen instead is kept for the error.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<String>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = |c: &CertificateDer<'_>| {
            normalise_fingerprint(&appliance::crypto::fingerprint(c.as_ref())).unwrap_or_default()
        };
        let Some(ca) = intermediates.iter().find(|c| fp(c) == self.fingerprint) else {
            *self.seen.lock().expect("pinned CA lock poisoned") = intermediates
                .last()
                .map(|c| appliance::crypto::fingerprint(c.as_ref()));
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|_| rustls::Error::General("the pinned CA is not a usable root".into()))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client_builder(
    suites: Suites,
) -> anyhow::Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    rustls::ClientConfig::builder_with_provider(provider(suites))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")
}

/// The node-to-node client: this node's certificate, the peer verified
/// against the group's CA for its host name.
pub fn node_client(
    suites: Suites,
    node: &Identity,
    ca_pem: &str,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("CA PEM")?).context("CA certificate")?;
    }
    let chain = CertificateDer::pem_slice_iter(node.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("node certificate PEM")?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(node.key_pem.expose().as_bytes())
        .context("node key PEM")?;
    let mut config = client_builder(suites)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("node certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the operator gives to join a group (`POST /api/v1/ha/join`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The primary's HTTPS address: `host` or `host:port` (default 443).
    pub primary: String,
    /// The CA fingerprint the primary's dashboard shows.
    pub ca_fingerprint: String,
    /// A System Administrator of the primary.
    pub login: String,
    pub password: SecretString,
    /// The primary's HA control port (default 8080).
    pub ha_port: Option<u16>,
}

/// What this node knows of itself when it joins.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub own_name: String,
    pub own_ha_port: u16,
    pub own_keys_port: u16,
    pub own_keys_ec_port: u16,
    pub suites: Suites,
    pub kind: CaKind,
}

/// What a join established.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Joined {
    pub primary: String,
    pub ca_fingerprint: String,
}

fn split_host_port(text: &str, default: u16) -> appliance::Result<(String, u16)> {
    let text = text.trim();
    let rule = "must be the primary's host name or address, optionally with :port";
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Error::invalid("primary", "the port must be 1 to 65535"))?;
            (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                port,
            )
        }
        _ => (text.to_owned(), default),
    };
    if host.parse::<std::net::IpAddr>().is_err() {
        appliance::model::check_host_name("primary", &host)
            .map_err(|_| Error::invalid("primary", rule))?;
    }
    Ok((host, port))
}

fn from_call(what: &str, e: CallError) -> Error {
    Error::conflict("primary", format!("{what}: {e}"))
}

/// Step 1 on the failover: everything up to what must be kept (the caller
/// keeps it with `Store::join_group` and restarts). Errors name the field
/// and what the primary said; nothing is kept on any error.
impl JoinRequest {
    /// The request's own rules, before anything else is looked at: the
    /// pinned fingerprint (upper-case hex), host and ports.
    pub fn check(&self) -> appliance::Result<(String, String, u16, u16)> {
        let pinned = normalise_fingerprint(&self.ca_fingerprint).ok_or_else(|| {
            Error::invalid(
                "ca_fingerprint",
                "must be the SHA-256 fingerprint the primary's dashboard shows (64 hexadecimal digits)",
            )
        })?;
        if self.login.trim().is_empty() {
            return Err(Error::invalid("login", "must not be empty"));
        }
        if self.password.expose().is_empty() {
            return Err(Error::invalid("password", "must not be empty"));
        }
        let (host, port) = split_host_port(&self.primary, 443)?;
        let ha_port = self.ha_port.unwrap_or(8080);
        if ha_port == 0 {
            return Err(Error::invalid("ha_port", "must be 1 to 65535"));
        }
        Ok((pinned, host, port, ha_port))
    }
}

pub async fn join(
    req: &JoinRequest,
    me: &Joiner,
) -> appliance::Result<(Identity, SecretBytes, JoinedPrimary, Joined)> {
    let (pinned, host, port, ha_port) = req.check()?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::conflict("primary", format!("{host} cannot be resolved")))?;

    // The primary's HTTPS API, trusted only with the pinned CA.
    let verifier = Arc::new(PinnedCa {
        fingerprint: pinned.clone(),
        provider: provider(me.suites),
        seen: Mutex::new(None),
    });
    let mut web_tls = client_builder(me.suites)
        .map_err(|e| Error::conflict("primary", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    web_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let web = Target {
        addr,
        server_name: host.clone(),
        tls: Arc::new(web_tls),
    };
    let signed_in = call(
        &web,
        "POST",
        "/api/v1/login",
        None,
        Some(&json!({ "login": req.login, "password": req.password.expose() })),
        CALL_TIMEOUT,
    )
    .await;
    let token = match signed_in {
        Ok(v) => v["token"].as_str().unwrap_or_default().to_owned(),
        Err(CallError::Unreachable(why)) => {
            let seen = verifier
                .seen
                .lock()
                .expect("pinned CA lock poisoned")
                .clone();
            return Err(match seen {
                Some(fp) => Error::conflict(
                    "ca_fingerprint",
                    format!(
                        "the primary's CA is {fp}, not the one given: compare it with the primary's dashboard"
                    ),
                ),
                None => Error::conflict("primary", format!("the primary cannot be reached: {why}")),
            });
        }
        Err(e) => return Err(from_call("signing in to the primary", e)),
    };
    let own = me.own_name.clone();
    let (key_pem, csr) = tokio::task::spawn_blocking(move || appliance::pki::node_request(&own))
        .await
        .map_err(|e| Error::conflict("primary", e.to_string()))??;
    let registered = call(
        &web,
        "POST",
        &format!("/api/v1/ha/nodes/{}/registration", me.own_name),
        Some(&token),
        Some(&json!({ "csr": csr, "ha_port": me.own_ha_port,
                      "keys_port": me.own_keys_port, "keys_ec_port": me.own_keys_ec_port })),
        CALL_TIMEOUT,
    )
    .await;
    let _ = call(
        &web,
        "POST",
        "/api/v1/logout",
        Some(&token),
        None,
        CALL_TIMEOUT,
    )
    .await;
    let registered = registered.map_err(|e| from_call("registering with the primary", e))?;
    let text = |k: &str| registered[k].as_str().unwrap_or_default().to_owned();
    if text("kind") != me.kind.as_str() {
        return Err(Error::conflict(
            "security_mode",
            format!(
                "the primary uses its {} CA and this appliance the {} one: both nodes must run in the same security mode (§9)",
                text("kind").to_uppercase(),
                me.kind.as_str().to_uppercase()
            ),
        ));
    }
    let ca_fingerprint = text("ca_fingerprint");
    if normalise_fingerprint(&ca_fingerprint).as_deref() != Some(pinned.as_str()) {
        return Err(Error::conflict(
            "ca_fingerprint",
            format!("the primary registered this node under another CA ({ca_fingerprint})"),
        ));
    }
    let primary_name = registered["primary"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let primary_fp = registered["primary"]["certificate_fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if primary_name.is_empty() || primary_fp.is_empty() {
        return Err(Error::conflict(
            "primary",
            "the primary did not say its own name and node certificate",
        ));
    }
    let node = Identity {
        cert_pem: text("certificate"),
        key_pem,
    };
    let ca_pem = text("ca_certificate");

    // The group's key, over the control API with the new certificate.
    let control = Target {
        addr: SocketAddr::new(addr.ip(), ha_port),
        server_name: primary_name.clone(),
        tls: node_client(me.suites, &node, &ca_pem)
            .map_err(|e| Error::conflict("primary", e.to_string()))?,
    };
    let answer = call(
        &control,
        "POST",
        "/ha/v1/master-key",
        None,
        None,
        CALL_TIMEOUT,
    )
    .await
    .map_err(|e| from_call("receiving the group's key on the HA control port", e))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(answer["master_key"].as_str().unwrap_or_default())
        .map_err(|_| Error::conflict("primary", "the group's key did not arrive whole"))?;
    let joined = JoinedPrimary {
        name: primary_name.clone(),
        address: addr.ip().to_string(),
        ha_port,
        node_fingerprint: primary_fp,
        ca_pem,
        own_name: me.own_name.clone(),
    };
    Ok((
        node,
        SecretBytes::new(key),
        joined,
        Joined {
            primary: primary_name,
            ca_fingerprint,
        },
    ))
}

/// Config Replication, for the REST API and the console: see the module
/// documentation (step 2). Answers the failover's row once it replicates.
pub async fn configure_replication(
    st: &Arc<crate::state::AppState>,
    actor: appliance::access::Actor,
    name: String,
) -> crate::error::ApiResult<Option<appliance::store::HaNodeView>> {
    actor.require_system(appliance::access::Access::Write)?;
    let (fallback, mode, pg) = (st.host_name.clone(), st.mode, st.pg.clone());
    let ca_pem = st
        .identities
        .ca(appliance::pki::CaKind::for_mode(mode))
        .cert_pem
        .clone();
    let n2 = name.clone();
    let (own, node, target) = st
        .store(move |s| {
            if s.is_failover()? {
                return Err(appliance::Error::Failover {
                    primary: String::new(),
                });
            }
            let found = s
                .ha_nodes_unchecked()?
                .into_iter()
                .find(|n| n.name == n2 && n.role == "failover")
                .ok_or_else(|| appliance::Error::not_found("failover", &n2))?;
            let Some(control) = found.control_address.filter(|_| found.registered) else {
                return Err(appliance::Error::conflict(
                    "name",
                    "has not registered: run ha convert2failover on it first",
                ));
            };
            let own = s
                .os_settings()?
                .host_name
                .map_or(fallback, |h| h.as_str().to_owned());
            let kind = appliance::pki::CaKind::for_mode(mode);
            let node = s.ensure_own_node_identity(&own, kind)?;
            crate::ha_setup::prepare_primary(
                s,
                &pg,
                &node,
                &ca_pem,
                crate::tls::Suites::for_mode(mode),
            )?;
            Ok((own, node, control))
        })
        .await?;
    let addr: std::net::SocketAddr = target.parse().map_err(|_| {
        appliance::Error::conflict("name", "its registered control address is not usable")
    })?;
    let to = crate::ha_setup::Target {
        addr,
        server_name: name.clone(),
        tls: crate::ha_setup::node_client(
            crate::tls::Suites::for_mode(mode),
            &node,
            &st.identities
                .ca(appliance::pki::CaKind::for_mode(mode))
                .cert_pem,
        )
        .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?,
    };
    crate::ha_setup::call(
        &to,
        "POST",
        "/ha/v1/replicate",
        None,
        Some(&json!({ "primary": own, "replication_port": st.pg.port })),
        crate::ha_setup::REPLICATE_TIMEOUT,
    )
    .await
    .map_err(|e| {
        appliance::Error::conflict(
            "name",
            format!("the failover could not set up the replication: {e}"),
        )
    })?;
    let n2 = name.clone();
    st.store(move |s| s.mark_ha_configured(&actor, &n2)).await?;
    crate::ha::refresh_once(st).await;
    let view = st
        .store(move |s| Ok(s.ha_nodes_unchecked()?.into_iter().find(|n| n.name == name)))
        .await?;
    Ok(view)
}

/// The TLS files of this node's PostgreSQL from its identity.
fn node_tls<'a>(node: &'a Identity, ca_pem: &'a str, suites: Suites) -> NodeTls<'a> {
    NodeTls {
        cert_pem: &node.cert_pem,
        key_pem: node.key_pem.expose(),
        ca_pem,
        suite_b: suites == Suites::SuiteB,
    }
}

/// Step 2 on the primary, the part on this node: its PostgreSQL made,
/// configured for the registered failovers and started, and the store
/// moved there when it is still on SQLite. Blocking.
pub fn prepare_primary(
    store: &Store,
    pg: &PgNode,
    node: &Identity,
    ca_pem: &str,
    suites: Suites,
) -> appliance::Result<()> {
    let peers: Vec<String> = store
        .ha_nodes_unchecked()?
        .into_iter()
        .filter(|n| n.role == "failover" && n.registered)
        .map(|n| n.name)
        .collect();
    pg.init()?;
    pg.configure(
        &node_tls(node, ca_pem, suites),
        &peers,
        store.ha_synchronous()?,
    )?;
    pg.start()?;
    pg.prepare_primary()?;
    if store.backend() == Backend::Sqlite {
        store.move_to_postgres(&pg.conninfo())?;
    }
    Ok(())
}

/// Step 3 on the failover: the base backup from the primary, the cluster
/// started as its standby, and the store named there. Blocking; the
/// caller restarts the service.
pub fn replicate_from(
    dir: &std::path::Path,
    pg: &PgNode,
    node: &Identity,
    primary: &JoinedPrimary,
    replication_port: u16,
    suites: Suites,
) -> appliance::Result<()> {
    let tls = node_tls(node, &primary.ca_pem, suites);
    pg.write_tls(&tls)?;
    pg.base_backup_from(
        &primary.own_name,
        &primary.name,
        &primary.address,
        replication_port,
    )?;
    pg.configure(&tls, std::slice::from_ref(&primary.name), false)?;
    pg.start()?;
    Backend::Postgres(pg.conninfo()).record(dir)
}

/// Before the store opens: this node's PostgreSQL, when HA was set up
/// here, started with its key written again (the run directory is tmpfs).
/// Blocking.
pub fn start_node_engine(dir: &std::path::Path, pg: &PgNode) -> anyhow::Result<()> {
    if !pg.exists() {
        return Ok(());
    }
    let presented = pg
        .certificate_pem()
        .context("the node PostgreSQL's certificate (pg/tls/node.crt)")?;
    let node = [CaKind::Ec, CaKind::Rsa]
        .into_iter()
        .filter_map(|k| appliance::store::node_identity_in(dir, k).ok().flatten())
        .find(|id| id.cert_pem.trim() == presented.trim())
        .context("this node's HA key for the certificate its PostgreSQL presents")?;
    pg.write_key(node.key_pem.expose())?;
    pg.start()?;
    tracing::info!(port = pg.port, "the node's PostgreSQL is running");
    Ok(())
}

/// §11 `convert2primary` (REST `POST /api/v1/ha/promote` on a failover):
/// the engine promoted, the group's table updated (the old primary fenced
/// when it comes back). Blocking.
pub fn promote(
    store: &Store,
    pg: &PgNode,
    actor: &appliance::access::Actor,
    own_name: &str,
) -> appliance::Result<String> {
    let old = store.promote_to_primary(actor, own_name, || pg.promote())?;
    tracing::warn!(former = %old, "this failover is now the group's primary");
    Ok(old)
}

/// HA fencing: a primary asks the other nodes of its group who they are.
/// One that answers as primary and names this node among its failovers
/// was promoted in this node's place (`convert2primary` while this one was
/// down): this node fences itself, refusing every write, says so on its
/// dashboard and in the journal, and waits to rejoin as a failover.
/// A node that cannot be reached tells nothing.
pub async fn check_fencing(st: &Arc<crate::state::AppState>) {
    let (own_fallback, mode) = (st.host_name.clone(), st.mode);
    let kind = CaKind::for_mode(mode);
    let found = st
        .store(move |s| {
            if s.fenced_by().is_some() || s.is_failover()? {
                return Ok(None);
            }
            let appliance::store::HaRole::Primary { .. } = s.ha_role()? else {
                return Ok(None);
            };
            let own = s
                .os_settings()?
                .host_name
                .map_or(own_fallback, |h| h.as_str().to_owned());
            let peers: Vec<(String, String)> = s
                .ha_nodes_unchecked()?
                .into_iter()
                .filter(|n| n.role == "failover")
                .filter_map(|n| Some((n.name, n.control_address?)))
                .collect();
            Ok(s.node_identity(kind)?.map(|node| (own, node, peers)))
        })
        .await;
    let Ok(Some((own, node, peers))) = found else {
        return;
    };
    let Ok(tls) = node_client(
        Suites::for_mode(mode),
        &node,
        &st.identities.ca(kind).cert_pem,
    ) else {
        return;
    };
    for (name, control) in peers {
        let Ok(addr) = control.parse::<SocketAddr>() else {
            continue;
        };
        let to = Target {
            addr,
            server_name: name.clone(),
            tls: tls.clone(),
        };
        let Ok(hello) = call(
            &to,
            "GET",
            "/ha/v1/hello",
            None,
            None,
            Duration::from_secs(3),
        )
        .await
        else {
            continue;
        };
        let role = &hello["high_availability"];
        let names_me = role["failovers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|n| n.as_str() == Some(own.as_str())));
        if role["role"] == "primary" && names_me {
            tracing::error!(
                primary = %name,
                "fenced: {name} was made primary in this appliance's place; this appliance takes no changes until it rejoins as a failover (Config Replication on {name})"
            );
            st.store.fence(&name);
            return;
        }
    }
}
