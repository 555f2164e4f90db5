//! The rustls client configurations the agent uses, and the certificate checks
//! around them.
//!
//! Three configurations, one per stage of a host's life:
//! * [`first_use`]: fetching the appliance CA before the host trusts anything.
//!   The server certificate is not verified during the handshake, only
//!   recorded; once the CA is fetched and matched against the fingerprint the
//!   operator pinned (`--ca-fingerprint`), the recorded chain must lead to it
//!   ([`check_presented`]). Handshake signatures are verified.
//! * [`enrolment`]: registering, with the server verified against the pinned
//!   CA only; the chain it presented is recorded too, so a refusal can name it.
//! * [`mutual`]: the key service, with the host's own certificate as client
//!   certificate and the server verified against the saved, pinned CA.
//!
//! All of them use the aws-lc-rs provider with TLS 1.2 and 1.3; the appliance's
//! security mode (compatible or Suite B) narrows the cipher suites on its side.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The TLS versions the agent speaks: the appliance refuses anything older.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificate chain a server presented in the last handshake (end entity
/// first), as recorded by the agent's verifiers.
#[derive(Debug, Default)]
pub struct Presented(Mutex<Option<Vec<CertificateDer<'static>>>>);

impl Presented {
    pub fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(chain);
    }
}

/// Configuration for the one request made before the CA is known:
/// `GET /agent/v1/ca`. Nothing secret is sent on it.
pub fn first_use() -> Result<(ClientConfig, Arc<Presented>)> {
    let provider = provider();
    let presented = Arc::new(Presented::default());
    let verifier = AcceptAnyServerCert {
        algorithms: provider.signature_verification_algorithms,
        presented: presented.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .context("TLS 1.2 and 1.3 with the aws-lc-rs provider")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, presented))
}

/// Configuration for registration: the server must present a certificate issued
/// by `ca` for the host name it was reached by. The chain it presented is
/// recorded whether or not it passes.
pub fn enrolment(ca: &CertificateDer<'static>) -> Result<(ClientConfig, Arc<Presented>)> {
    let presented = Arc::new(Presented::default());
    let verifier = Recording {
        inner: server_verifier(ca)?,
        presented: presented.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("TLS 1.2 and 1.3 with the aws-lc-rs provider")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, presented))
}

fn server_verifier(ca: &CertificateDer<'static>) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .build()
        .context("building the server certificate verifier")
}

/// Checks that a recorded server chain leads to `ca` and names `host`; the
/// error names the presented certificate and the pinned CA by fingerprint.
pub fn check_presented(
    ca: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
    host: &str,
) -> Result<()> {
    let (end_entity, intermediates) = chain
        .split_first()
        .context("the server presented no certificate")?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| anyhow!("{host:?} is not a server name"))?;
    match server_verifier(ca)?.verify_server_cert(
        end_entity,
        intermediates,
        &name,
        &[],
        UnixTime::now(),
    ) {
        Ok(_) => Ok(()),
        Err(error) => Err(chain_mismatch(ca, end_entity, host, &error)),
    }
}

/// The refusal of a server whose handshake chain does not lead to the pinned CA.
pub fn chain_mismatch(
    ca: &CertificateDer<'static>,
    end_entity: &CertificateDer<'static>,
    host: &str,
    error: &dyn fmt::Display,
) -> anyhow::Error {
    let issuer = x509_parser::parse_x509_certificate(end_entity)
        .map(|(_, c)| c.issuer().to_string())
        .unwrap_or_else(|_| "unreadable".to_owned());
    anyhow!(
        "CA fingerprint mismatch: the TLS server at {host} presented a certificate          (SHA-256 {}, issued by {issuer:?}) that does not lead to the pinned CA          (SHA-256 {}): {error}; not sending the shared secret (is something          between this host and the appliance?)",
        Fingerprint::of(end_entity),
        Fingerprint::of(ca)
    )
}

/// Configuration for the key service: mutual TLS with the host certificate.
pub fn mutual(
    ca: &CertificateDer<'static>,
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("TLS 1.2 and 1.3 with the aws-lc-rs provider")?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(vec![certificate], key)
        .context("the saved host certificate and key do not belong together")
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .context("the appliance CA certificate is not usable as a trust anchor")?;
    Ok(roots)
}

/// Checks that `certificate` was issued by `ca` and may be used as a TLS client
/// certificate now. Used on the certificate the appliance returns at registration,
/// so that a bad certificate is refused before it is saved.
pub fn check_client_certificate(
    ca: &CertificateDer<'static>,
    certificate: &CertificateDer<'static>,
) -> Result<()> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .build()
        .context("building the client certificate verifier")?;
    verifier
        .verify_client_cert(certificate, &[], UnixTime::now())
        .context("the issued host certificate does not chain to the appliance CA")?;
    Ok(())
}

/// Accepts any server certificate and records it, for the CA fetch only; the
/// record is checked against the CA once it is known ([`check_presented`]).
///
/// The handshake signatures are still checked with the provider's algorithms, so
/// the peer must hold the private key of the certificate it presents; what is not
/// checked during the handshake is who issued that certificate.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
    presented: Arc<Presented>,
}

/// A verifier that records the chain before its inner verifier judges it.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    presented: Arc<Presented>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.presented.record(end_entity, intermediates);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.presented.record(end_entity, intermediates);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// SHA-256 of a certificate's DER, shown as `AB:CD:…` like the appliance dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// Parses a fingerprint in any case, with or without colons (or spaces) between
/// the bytes, so that one copied from the dashboard or from `openssl x509
/// -fingerprint -sha256` is accepted.
impl FromStr for Fingerprint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let digits: String = s
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).with_context(|| {
            format!("{s:?} is not a SHA-256 fingerprint (64 hex digits, colons optional)")
        })?;
        Ok(Fingerprint(bytes))
    }
}

/// Reads the single certificate in `pem`; `what` names it in errors.
pub fn single_certificate(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
    let mut certificates = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        certificates.push(certificate.with_context(|| format!("{what}: malformed PEM"))?);
    }
    match certificates.len() {
        1 => Ok(certificates.remove(0)),
        0 => bail!("{what}: no certificate in the PEM"),
        n => bail!("{what}: expected one certificate, found {n}"),
    }
}

/// Reads a PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).context("host.key: not a PEM private key")
}

/// The appliance CA as fetched on first use, with its recomputed fingerprint.
#[derive(Debug)]
pub struct FirstUseCa {
    pub certificate: CertificateDer<'static>,
    pub fingerprint: Fingerprint,
}

impl FirstUseCa {
    /// Reads the CA from the `/agent/v1/ca` answer. The fingerprint is recomputed
    /// here; the one the appliance sent must agree with it.
    pub fn from_response(pem: &str, sent_fingerprint: &str) -> Result<Self> {
        let certificate = single_certificate(pem, "the appliance CA")?;
        let fingerprint = Fingerprint::of(&certificate);
        let sent: Fingerprint = sent_fingerprint
            .parse()
            .context("the appliance sent a malformed CA fingerprint")?;
        ensure!(
            sent == fingerprint,
            "the appliance CA does not match the fingerprint it was sent with \
             (sent {sent}, computed {fingerprint}): refusing it"
        );
        Ok(FirstUseCa {
            certificate,
            fingerprint,
        })
    }

    /// Refuses the CA unless it has the fingerprint the operator pinned.
    pub fn check_pin(&self, pinned: &Fingerprint, server: &str) -> Result<()> {
        ensure!(
            *pinned == self.fingerprint,
            "CA fingerprint mismatch: {server} serves a CA with fingerprint {}, \
             but --ca-fingerprint is {pinned}; not sending the shared secret (the \
             RSA CA is for enrolment port 8443, the EC CA for 8446: check that \
             you copied the right one; otherwise something is between this host \
             and the appliance)",
            self.fingerprint
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, PKCS_ECDSA_P384_SHA384,
    };
    use rustls::{ClientConnection, ServerConfig, ServerConnection};

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let certificate = params.self_signed(&key).expect("self-signed CA");
        Ca {
            der: certificate.der().clone(),
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(
        ca: &Ca,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.extended_key_usages = vec![usage];
        let certificate = params.signed_by(&key, &ca.issuer).expect("signed");
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
        (certificate.der().clone(), key)
    }

    /// Runs a TLS handshake in memory; true when both sides complete it.
    fn handshake(client: ClientConfig, server: ServerConfig, name: &str) -> bool {
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        let mut client = ClientConnection::new(Arc::new(client), name).expect("client");
        let mut server = ServerConnection::new(Arc::new(server)).expect("server");
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).expect("client writes");
            server.read_tls(&mut wire.as_slice()).expect("server reads");
            if server.process_new_packets().is_err() {
                return false;
            }
            let mut wire = Vec::new();
            server.write_tls(&mut wire).expect("server writes");
            client.read_tls(&mut wire.as_slice()).expect("client reads");
            if client.process_new_packets().is_err() {
                return false;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return true;
            }
        }
        false
    }

    fn server(
        certificate: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        client_ca: Option<&Ca>,
    ) -> ServerConfig {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(&ca.der).expect("roots")),
                    provider(),
                )
                .build()
                .expect("client verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(vec![certificate], key)
            .expect("server certificate")
    }

    #[test]
    fn fingerprint_is_upper_case_hex_with_colons() {
        let fingerprint = Fingerprint::of(b"abc");
        assert_eq!(
            fingerprint.to_string(),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:\
             B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn fingerprint_parses_in_any_case_with_or_without_colons() {
        let fingerprint = Fingerprint::of(b"abc");
        let plain = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(plain.parse::<Fingerprint>().expect("plain"), fingerprint);
        assert_eq!(
            fingerprint
                .to_string()
                .to_lowercase()
                .parse::<Fingerprint>()
                .expect("colons"),
            fingerprint
        );
        assert!("BA:78".parse::<Fingerprint>().is_err());
        assert!(plain.replace('b', "x").parse::<Fingerprint>().is_err());
    }

    #[test]
    fn first_use_ca_refuses_a_pinned_fingerprint_mismatch() {
        let ca = ca("Custos CA");
        let fingerprint = Fingerprint::of(&ca.der);
        let first_use = FirstUseCa::from_response(&ca.pem, &fingerprint.to_string())
            .expect("consistent answer");
        assert_eq!(first_use.fingerprint, fingerprint);
        first_use
            .check_pin(&fingerprint, "custos.example:8443")
            .expect("pinned and matching");

        let other = Fingerprint::of(b"another CA");
        let error = first_use
            .check_pin(&other, "custos.example:8443")
            .expect_err("mismatch refused")
            .to_string();
        assert!(error.contains("CA fingerprint mismatch"), "{error}");
        assert!(error.contains(&fingerprint.to_string()), "{error}");
        assert!(error.contains(&other.to_string()), "{error}");
    }

    #[test]
    fn first_use_ca_refuses_a_fingerprint_that_does_not_match_the_certificate() {
        let ca = ca("Custos CA");
        let wrong = Fingerprint::of(b"another CA").to_string();
        assert!(FirstUseCa::from_response(&ca.pem, &wrong).is_err());
        assert!(FirstUseCa::from_response(&ca.pem, "not a fingerprint").is_err());
        let two = format!("{}{}", ca.pem, ca.pem);
        let fingerprint = Fingerprint::of(&ca.der).to_string();
        assert!(FirstUseCa::from_response(&two, &fingerprint).is_err());
        assert!(FirstUseCa::from_response("", &fingerprint).is_err());
    }

    #[test]
    fn first_use_accepts_any_server_but_enrolment_only_the_ca() {
        let appliance_ca = ca("Custos CA");
        let rogue_ca = ca("Rogue CA");
        let (certificate, key) = leaf(
            &rogue_ca,
            "custos.example",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let rogue = server(certificate, key, None);
        let (config, presented) = first_use().expect("config");
        assert!(handshake(config, rogue.clone(), "anything.example"));
        let chain = presented.chain().expect("the chain is recorded");
        let error = check_presented(&appliance_ca.der, &chain, "custos.example")
            .expect_err("not issued by the pinned CA")
            .to_string();
        assert!(error.contains("CA fingerprint mismatch"), "{error}");
        assert!(
            error.contains(&Fingerprint::of(&appliance_ca.der).to_string()),
            "{error}"
        );
        assert!(
            error.contains(&Fingerprint::of(&chain[0]).to_string()),
            "{error}"
        );
        let (config, presented) = enrolment(&appliance_ca.der).expect("config");
        assert!(!handshake(config, rogue, "custos.example"));
        assert!(
            presented.chain().is_some(),
            "a refused chain is recorded too"
        );

        let (certificate, key) = leaf(
            &appliance_ca,
            "custos.example",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let genuine = server(certificate, key, None);
        let (config, presented) = first_use().expect("config");
        assert!(handshake(config, genuine.clone(), "custos.example"));
        check_presented(
            &appliance_ca.der,
            &presented.chain().expect("recorded"),
            "custos.example",
        )
        .expect("issued by the pinned CA");
        assert!(handshake(
            enrolment(&appliance_ca.der).expect("config").0,
            genuine.clone(),
            "custos.example"
        ));
        assert!(
            !handshake(
                enrolment(&appliance_ca.der).expect("config").0,
                genuine,
                "other.example"
            ),
            "the host name is checked"
        );
    }

    #[test]
    fn first_use_verifier_offers_the_provider_signature_schemes() {
        let provider = provider();
        let verifier = AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
            presented: Arc::default(),
        };
        let schemes = verifier.supported_verify_schemes();
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP384_SHA384));
        assert!(schemes.contains(&SignatureScheme::RSA_PSS_SHA256));
    }

    #[test]
    fn mutual_presents_the_host_certificate() {
        let ca = ca("Custos CA");
        let (server_certificate, server_key) =
            leaf(&ca, "custos.example", ExtendedKeyUsagePurpose::ServerAuth);
        let (host_certificate, host_key) = leaf(&ca, "app01", ExtendedKeyUsagePurpose::ClientAuth);
        check_client_certificate(&ca.der, &host_certificate).expect("issued by the CA");
        let config = mutual(&ca.der, host_certificate, host_key).expect("config");
        assert!(handshake(
            config,
            server(server_certificate, server_key, Some(&ca)),
            "custos.example"
        ));

        let rogue = self::ca("Rogue CA");
        let (rogue_certificate, _) = leaf(&rogue, "app01", ExtendedKeyUsagePurpose::ClientAuth);
        assert!(check_client_certificate(&ca.der, &rogue_certificate).is_err());
    }
}
