//! The HA control API (§11, §1 port 8080): node to node, over mutual TLS
//! with node certificates from the appliance CA. A peer whose certificate
//! does not chain to the CA, or is not a registered node's (by
//! fingerprint, from the group's table), is refused at the handshake:
//! it never reaches HTTP.
//!
//! What travels here: `GET /ha/v1/hello` (who answers, in which role) and
//! `POST /ha/v1/master-key`, the group's master key for a registered
//! failover, which must open what the primary sealed; it is audited,
//! never logged.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use appliance::pki::Identity;
use axum::Router;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::serve::Peer;
use crate::state::AppState;
use crate::tls::{Suites, provider};

/// The fingerprints of the registered nodes' certificates, refreshed from
/// the store (the handshake must not wait for it).
#[derive(Debug, Default)]
pub struct RegisteredNodes(RwLock<HashSet<String>>);

impl RegisteredNodes {
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.0
            .read()
            .expect("registered nodes lock poisoned")
            .contains(fingerprint)
    }

    pub fn replace(&self, fingerprints: impl IntoIterator<Item = String>) {
        *self.0.write().expect("registered nodes lock poisoned") =
            fingerprints.into_iter().collect();
    }
}

/// Chains to the appliance CA (mandatory), then must be a registered node.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    nodes: Arc<RegisteredNodes>,
}

impl ClientCertVerifier for NodeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let fp = appliance::crypto::fingerprint(end_entity.as_ref());
        if self.nodes.contains(&fp) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(certificate = %fp, "HA control: a certificate that is not a registered node's was refused");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// The control API's TLS: this node's certificate, peers verified by
/// [`NodeVerifier`]; the security mode's suites (§9 applies to HA traffic).
pub fn server_config(
    suites: Suites,
    node: &Identity,
    ca: &Identity,
    nodes: Arc<RegisteredNodes>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = provider(suites);
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(c.context("CA PEM")?).context("CA certificate")?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("client verifier")?;
    let chain = CertificateDer::pem_slice_iter(node.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("node certificate PEM")?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(node.key_pem.expose().as_bytes())
        .context("node key PEM")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_client_cert_verifier(Arc::new(NodeVerifier { inner, nodes }))
        .with_single_cert(chain, key)
        .context("node certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ha/v1/hello", get(hello))
        .route("/ha/v1/master-key", post(master_key))
        .route("/ha/v1/replicate", post(replicate))
        .with_state(state)
}

/// Who answers, and in which role.
async fn hello(State(st): State<Arc<AppState>>) -> ApiResult<Response> {
    let role = st.store(|s| s.ha_role()).await?;
    Ok(axum::Json(json!({ "name": st.host_name, "high_availability": role })).into_response())
}

/// The group's master key, to a registered failover.
async fn master_key(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Response> {
    let fp = peer
        .cert_fingerprint
        .clone()
        .ok_or_else(|| ApiError::Unauthenticated("a node certificate is required"))?;
    let source = peer.addr.ip().to_string();
    let key = st
        .store(move |s| s.master_key_for_failover(&fp, &source))
        .await?;
    Ok(axum::Json(json!({
        "master_key": base64::engine::general_purpose::STANDARD.encode(key.expose()),
    }))
    .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Replicate {
    /// The primary's host name, as this node joined it.
    primary: String,
    /// Its replication port (§1: 50000).
    replication_port: u16,
}

/// On a failover, from its primary only (§11 Config Replication): a base
/// backup of the primary's PostgreSQL, then streaming from it; the store
/// is named there and the service restarts as the group's failover.
async fn replicate(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    crate::json::ApiJson(req): crate::json::ApiJson<Replicate>,
) -> ApiResult<Response> {
    let fp = peer
        .cert_fingerprint
        .clone()
        .ok_or_else(|| ApiError::Unauthenticated("a node certificate is required"))?;
    let (pg, mode) = (st.pg.clone(), st.mode);
    let ca_pem = st
        .identities
        .ca(appliance::pki::CaKind::for_mode(mode))
        .cert_pem
        .clone();
    let peer_ip = peer.addr.ip().to_string();
    st.store(move |s| {
        // A fenced former primary rejoins as a failover of the node that
        // replaced it: that node (registered in this node's table) is now
        // the one it replicates from.
        if let Some(new_primary) = s.fenced_by() {
            let node = s
                .ha_nodes_unchecked()?
                .into_iter()
                .find(|n| n.name == new_primary && n.certificate_fingerprint.as_deref() == Some(fp.as_str()));
            if let Some(node) = node {
                let own = s
                    .ha_nodes_unchecked()?
                    .into_iter()
                    .find(|n| n.role == "primary")
                    .map(|n| n.name)
                    .unwrap_or_default();
                let ha_port = node
                    .control_address
                    .as_deref()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .map_or(8080, |a| a.port());
                s.save_joined_primary(&appliance::store::JoinedPrimary {
                    name: node.name,
                    address: peer_ip,
                    ha_port,
                    node_fingerprint: fp.clone(),
                    ca_pem,
                    own_name: own,
                })?;
            }
        }
        let joined = appliance::store::joined_primary(s.dir())?.ok_or_else(|| {
            appliance::Error::conflict(
                "primary",
                "this appliance has not joined a group: run ha convert2failover on it first",
            )
        })?;
        if joined.node_fingerprint != fp || joined.name != req.primary {
            return Err(appliance::Error::Forbidden(
                "only the primary this node joined configures its replication".into(),
            ));
        }
        if req.replication_port == 0 {
            return Err(appliance::Error::invalid(
                "replication_port",
                "must be 1 to 65535",
            ));
        }
        let kind = appliance::pki::CaKind::for_mode(mode);
        let node = s.node_identity(kind)?.ok_or_else(|| {
            appliance::Error::conflict("primary", "this node has no node certificate")
        })?;
        tracing::warn!(primary = %joined.name, "replacing this store with a base backup of the primary's");
        crate::ha_setup::replicate_from(
            s.dir(),
            &pg,
            &node,
            &joined,
            req.replication_port,
            crate::tls::Suites::for_mode(mode),
        )
    })
    .await?;
    tracing::warn!("this node is now a failover streaming from its primary; restarting");
    let restart = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        restart.restart.notify_one();
    });
    Ok(axum::Json(json!({ "replicating": true })).into_response())
}

/// Keeps [`RegisteredNodes`] in step with the group's table.
pub async fn refresh(st: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // The start-up already asked (main.rs); the next time in 10 s.
    let mut rounds = 1u32;
    loop {
        refresh_once(&st).await;
        // Every 10 s: has another node been made primary in this one's place?
        if rounds.is_multiple_of(5) {
            crate::ha_setup::check_fencing(&st).await;
        }
        rounds = rounds.wrapping_add(1);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Reads the registered nodes now (after a change made here).
pub async fn refresh_once(st: &Arc<AppState>) {
    // A node that joined a group accepts its primary before the group's
    // table reaches it with the replica.
    let own_fallback = st.host_name.clone();
    let found = st
        .store(move |s| {
            let mut fps = s.registered_node_fingerprints()?;
            if let Some(j) = appliance::store::joined_primary(s.dir())? {
                fps.push(j.node_fingerprint);
            }
            // A key answer never names the node that gives it.
            let own = s.os_settings()?.host_name.map(|h| h.as_str().to_owned());
            let failovers: Vec<_> = s
                .host_failovers()?
                .into_iter()
                .filter(|f| Some(&f.name) != own.as_ref() && f.name != own_fallback)
                .collect();
            Ok((fps, failovers))
        })
        .await;
    let found = found.map(|(fps, failovers)| {
        *st.host_failovers
            .write()
            .expect("host failovers lock poisoned") = failovers;
        fps
    });
    match found {
        Ok(fps) => st.nodes.replace(fps),
        Err(e) => tracing::warn!(error = ?e, "HA control: reading the registered nodes failed"),
    }
}
