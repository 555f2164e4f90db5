//! TLS server configurations for the two security modes of §9.
//!
//! Compatible: the RSA certificate, rustls' modern suites, TLS 1.2 and 1.3.
//! Suite B: the ECDSA P-384 certificate; TLS 1.3 TLS_AES_256_GCM_SHA384 and
//! TLS 1.2 ECDHE-ECDSA-AES256-GCM-SHA384 only, P-384 key exchange, and
//! client certificates verified with ECDSA P-384/SHA-384 only.

use std::sync::Arc;

use anyhow::Context;
use appliance::pki::Identity;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Which suite set a listener uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suites {
    Compatible,
    SuiteB,
}

static SUITE_B_SIG_ALGS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] =
    &[webpki::aws_lc_rs::ECDSA_P384_SHA384];
static SUITE_B_MAPPING: &[(
    SignatureScheme,
    &[&dyn rustls::pki_types::SignatureVerificationAlgorithm],
)] = &[(SignatureScheme::ECDSA_NISTP384_SHA384, SUITE_B_SIG_ALGS)];

impl Suites {
    /// The suites of a security mode (§9).
    pub fn for_mode(mode: appliance::model::SecurityMode) -> Suites {
        match mode {
            appliance::model::SecurityMode::SuiteB => Suites::SuiteB,
            appliance::model::SecurityMode::Compatible => Suites::Compatible,
        }
    }
}

pub fn provider(suites: Suites) -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    if suites == Suites::SuiteB {
        p.cipher_suites = vec![
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ];
        p.kx_groups = vec![aws_lc_rs::kx_group::SECP384R1];
        p.signature_verification_algorithms = WebPkiSupportedAlgorithms {
            all: SUITE_B_SIG_ALGS,
            mapping: SUITE_B_MAPPING,
        };
    }
    Arc::new(p)
}

fn chain_and_key(
    id: &Identity,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("server certificate PEM")?;
    let key =
        PrivateKeyDer::from_pem_slice(id.key_pem.expose().as_bytes()).context("server key PEM")?;
    Ok((chain, key))
}

/// A server configuration. With `client_ca`, clients must present a
/// certificate issued by that CA (mutual TLS).
pub fn server_config(
    suites: Suites,
    server: &Identity,
    client_ca: Option<&Identity>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider(suites);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let (chain, key) = chain_and_key(server)?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
                roots.add(c.context("CA PEM")?).context("CA certificate")?;
            }
            // A presented certificate must verify; a missing one is let
            // through to HTTP, where the key service refuses it with a 403
            // that says why instead of a bare TLS alert.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("client verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("server certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
