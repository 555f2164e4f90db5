//! §9 certificates: the appliance's two certificate authorities (RSA and
//! ECDSA P-384), its server certificates, and the host certificates signed
//! from a protected host's CSR at registration.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::crypto::{fill_random, fingerprint};
use crate::model::SecurityMode;
use crate::secret::SecretString;
use crate::{Error, Result};

/// Which of the two authorities (and key types) a certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// Compatible mode: RSA 3072.
    Rsa,
    /// Suite B: ECDSA P-384 with SHA-384.
    Ec,
}

impl CaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Rsa => "rsa",
            CaKind::Ec => "ec",
        }
    }
    /// The authority that signs host certificates enrolled on this kind's port.
    pub fn for_mode(mode: SecurityMode) -> CaKind {
        match mode {
            SecurityMode::Compatible => CaKind::Rsa,
            SecurityMode::SuiteB => CaKind::Ec,
        }
    }
    fn new_key(self) -> Result<KeyPair> {
        Ok(match self {
            CaKind::Rsa => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)?
            }
            CaKind::Ec => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
        })
    }
}

/// A certificate with its private key (PEM). The key is a secret.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: SecretString,
}

impl Identity {
    pub fn cert_der(&self) -> Result<Vec<u8>> {
        pem_to_der(&self.cert_pem)
    }
    pub fn fingerprint(&self) -> Result<String> {
        Ok(fingerprint(&self.cert_der()?))
    }
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(self.key_pem.expose())?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }
}

/// The subject fields of the appliance CA (the `security genca` prompts).
#[derive(Debug, Clone)]
pub struct CaSubject {
    pub host_name: String,
    pub organizational_unit: String,
    pub organization: String,
    pub city: String,
    pub state: String,
    pub country: String,
}

impl CaSubject {
    pub fn default_for(host_name: &str) -> CaSubject {
        CaSubject {
            host_name: host_name.to_owned(),
            organizational_unit: "Key Management".into(),
            organization: "Custos".into(),
            city: String::new(),
            state: String::new(),
            country: "US".into(),
        }
    }
}

/// §9 certificate subject fields (the `security genca` prompts and the CSR
/// page): each with its maximum length; commas allowed, quotes refused.
pub const SUBJECT_FIELDS: [(&str, usize); 4] = [
    ("organizational_unit", 64),
    ("organization", 32),
    ("city", 128),
    ("state", 128),
];

impl CaSubject {
    /// Checks every field against §9; the error names the field.
    pub fn check(&self) -> Result<()> {
        crate::os::check_certificate_host_name("host_name", &self.host_name)?;
        for ((field, max), value) in SUBJECT_FIELDS.iter().zip([
            &self.organizational_unit,
            &self.organization,
            &self.city,
            &self.state,
        ]) {
            check_subject_text(field, value, *max)?;
        }
        if !(self.country.len() == 2 && self.country.chars().all(|c| c.is_ascii_uppercase())) {
            return Err(Error::invalid(
                "country",
                "must be a two-letter country code (ISO 3166, e.g. US)",
            ));
        }
        Ok(())
    }
}

fn check_subject_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    crate::model::check_text(field, value, max)?;
    if value.contains(['"', '\'', '`']) {
        return Err(Error::invalid(field, "must not contain quotes"));
    }
    Ok(())
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Makes a self-signed certificate authority of the given kind.
pub fn generate_ca(kind: CaKind, subject: &CaSubject) -> Result<Identity> {
    let key = kind.new_key()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    let cn = match kind {
        CaKind::Rsa => format!("Custos CA (RSA) {}", subject.host_name),
        CaKind::Ec => format!("Custos CA (EC P-384) {}", subject.host_name),
    };
    dn.push(DnType::CommonName, cn);
    for (ty, v) in [
        (DnType::OrganizationalUnitName, &subject.organizational_unit),
        (DnType::OrganizationName, &subject.organization),
        (DnType::LocalityName, &subject.city),
        (DnType::StateOrProvinceName, &subject.state),
        (DnType::CountryName, &subject.country),
    ] {
        if !v.is_empty() {
            dn.push(ty, v.as_str());
        }
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    validity(&mut params, 3650);
    let cert = params.self_signed(&key)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: SecretString::new(key.serialize_pem()),
    })
}

/// Issues the appliance's TLS server certificate for `names` (host names and
/// addresses the appliance answers on), signed by `ca`.
pub fn issue_server(ca: &Identity, kind: CaKind, names: &[String]) -> Result<Identity> {
    let key = kind.new_key()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "custos".into()),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 825);
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: SecretString::new(key.serialize_pem()),
    })
}

/// The common name of an HA node's certificate: `custos-ha:` and the
/// node's host name. A protected host's certificate is named by its host
/// name, which cannot hold a `:`, so no host can pass for a node.
pub fn node_common_name(host_name: &str) -> String {
    format!("custos-ha:{host_name}")
}

/// Issues an HA node's certificate (§11): server and client
/// authentication, for the node-to-node control API and PostgreSQL
/// replication, named [`node_common_name`] with the host name as its DNS
/// name.
pub fn issue_node(ca: &Identity, kind: CaKind, host_name: &str) -> Result<Identity> {
    let key = kind.new_key()?;
    let mut params = CertificateParams::new(vec![host_name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_common_name(host_name));
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 825);
    let cert = params.signed_by(&key, &ca.issuer()?)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: SecretString::new(key.serialize_pem()),
    })
}

/// Signs a protected host's CSR. The certificate's subject is the host name
/// the appliance registered (whatever the CSR asked for), for client
/// authentication only. In Suite B the host key must be ECDSA P-384.
pub fn sign_host_csr(
    ca: &Identity,
    kind: CaKind,
    csr_pem: &str,
    host_name: &str,
) -> Result<String> {
    sign_csr(
        ca,
        kind,
        csr_pem,
        host_name,
        host_name,
        &[ExtendedKeyUsagePurpose::ClientAuth],
    )
}

/// A failover's key and certificate signing request for its registration
/// (§11 `convert2failover`): ECDSA P-384, which both security modes accept.
pub fn node_request(host_name: &str) -> Result<(SecretString, String)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let mut params = CertificateParams::new(vec![host_name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_common_name(host_name));
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((SecretString::new(key.serialize_pem()), csr))
}

/// Signs an HA node's CSR (§11): named [`node_common_name`], for the
/// control API and replication, as server and client.
pub fn sign_node_csr(
    ca: &Identity,
    kind: CaKind,
    csr_pem: &str,
    host_name: &str,
) -> Result<String> {
    sign_csr(
        ca,
        kind,
        csr_pem,
        &node_common_name(host_name),
        host_name,
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

fn sign_csr(
    ca: &Identity,
    kind: CaKind,
    csr_pem: &str,
    common_name: &str,
    dns_name: &str,
    usages: &[ExtendedKeyUsagePurpose],
) -> Result<String> {
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        Error::invalid(
            "csr",
            format!("is not a valid PEM certificate signing request ({e})"),
        )
    })?;
    let alg = rcgen::PublicKeyData::algorithm(&csr.public_key);
    let acceptable = match kind {
        CaKind::Ec => alg == &rcgen::PKCS_ECDSA_P384_SHA384,
        CaKind::Rsa => [
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_RSA_SHA384,
            &rcgen::PKCS_RSA_SHA512,
        ]
        .contains(&alg),
    };
    if !acceptable {
        let rule = match kind {
            CaKind::Ec => "the key must be ECDSA P-384 in Suite B mode",
            CaKind::Rsa => "the key must be RSA or ECDSA P-256/P-384",
        };
        return Err(Error::invalid("csr", rule));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![rcgen::SanType::DnsName(
        dns_name
            .to_owned()
            .try_into()
            .map_err(|_| Error::invalid("host_name", "is not a valid DNS name"))?,
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 825);
    csr.params = params;
    Ok(csr.signed_by(&ca.issuer()?)?.pem())
}

/// The DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| Error::Certificate(format!("bad PEM certificate: {e}")))
}

/// Validity window of a certificate (DER), for display.
pub fn validity_of(der: &[u8]) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::Certificate(format!("cannot parse certificate: {e}")))?;
    Ok((
        cert.validity().not_before.to_datetime(),
        cert.validity().not_after.to_datetime(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_rules() {
        let ok = CaSubject {
            host_name: "custos.example.com".into(),
            organizational_unit: "Key Management, Recording".into(),
            organization: "Example".into(),
            city: "Zürich".into(),
            state: "ZH".into(),
            country: "CH".into(),
        };
        assert!(ok.check().is_ok());
        let field = |s: CaSubject| match s.check() {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("unexpected {other:?}"),
        };
        let mut s = ok.clone();
        s.organization = "o".repeat(33);
        assert_eq!(field(s), "organization");
        let mut s = ok.clone();
        s.city = "Say \"cheese\"".into();
        assert_eq!(field(s), "city");
        let mut s = ok.clone();
        s.country = "USA".into();
        assert_eq!(field(s), "country");
        let mut s = ok.clone();
        s.host_name = "h".repeat(65);
        assert_eq!(field(s), "host_name");
    }

    #[test]
    fn ec_ca_signs_server_and_host() {
        let ca = generate_ca(CaKind::Ec, &CaSubject::default_for("custos.local")).expect("ca");
        let server = issue_server(
            &ca,
            CaKind::Ec,
            &["custos.local".into(), "127.0.0.1".into()],
        )
        .expect("server");
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        let host_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let csr = CertificateParams::new(vec!["whatever".to_string()])
            .expect("params")
            .serialize_request(&host_key)
            .expect("csr")
            .pem()
            .expect("pem");
        let cert = sign_host_csr(&ca, CaKind::Ec, &csr, "rec1.example.com").expect("sign");
        let der = pem_to_der(&cert).expect("der");
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert!(parsed.subject().to_string().contains("rec1.example.com"));
        // A P-256 key is refused for Suite B.
        let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = CertificateParams::new(vec!["x".to_string()])
            .expect("params")
            .serialize_request(&p256)
            .expect("csr")
            .pem()
            .expect("pem");
        assert!(sign_host_csr(&ca, CaKind::Ec, &csr, "h").is_err());
        assert!(sign_host_csr(&ca, CaKind::Ec, "garbage", "h").is_err());
    }
}
