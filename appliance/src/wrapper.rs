//! The wrapper key of §12: the AES-256 key that encrypts backups, split into
//! M-of-N Shamir shares (GF(256), the `blahaj` crate) for its custodians.
//!
//! A share is text an administrator can copy:
//! `custos-share-1.<wrapper key id>.<M>.<x>.<y in hex>`. The wrapper key id
//! is a key-check value (the first 8 bytes of HMAC-SHA256 under the key), so
//! shares of another key, too few shares (which would rebuild a wrong key)
//! and damaged shares are all told apart from a good set before anything is
//! stored.

use crate::secret::{SecretBytes, SecretString};
use crate::{Error, Result};

/// Length of the wrapper key (AES-256).
pub const KEY_LEN: usize = 32;
/// Most custodians a key is split among.
pub const MAX_CUSTODIANS: u8 = 16;
const SHARE_PREFIX: &str = "custos-share-1";

/// The wrapper key itself; only ever in memory, sealed at rest.
pub struct WrapperKey(SecretBytes);

impl std::fmt::Debug for WrapperKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrapperKey({})", self.id())
    }
}

impl WrapperKey {
    /// A new key from the OS CSPRNG.
    pub fn generate() -> WrapperKey {
        WrapperKey(crate::crypto::random_secret(KEY_LEN))
    }

    pub fn from_bytes(bytes: SecretBytes) -> Result<WrapperKey> {
        if bytes.expose().len() != KEY_LEN {
            return Err(Error::Crypto("wrapper key has the wrong length"));
        }
        Ok(WrapperKey(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// The key's identifier and key-check value: 16 hex digits.
    pub fn id(&self) -> String {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.expose());
        let tag = aws_lc_rs::hmac::sign(&k, b"custos wrapper key check value");
        hex::encode(&tag.as_ref()[..8])
    }

    /// Splits the key into `n` shares of which any `m` rebuild it.
    pub fn split(&self, m: u8, n: u8) -> Result<Vec<SecretString>> {
        check_counts(m, n)?;
        let id = self.id();
        let shares = blahaj::Sharks(m).dealer(self.expose());
        Ok(shares
            .take(n as usize)
            .map(|s| {
                let bytes: Vec<u8> = Vec::from(&s);
                let (x, y) = bytes.split_first().expect("a share has an x and a y");
                SecretString::new(format!("{SHARE_PREFIX}.{id}.{m}.{x}.{}", hex::encode(y)))
            })
            .collect())
    }

    /// Rebuilds a key from pasted shares, refusing too few, repeated,
    /// mixed or damaged ones with a message that says which.
    pub fn combine(shares: &[SecretString]) -> Result<WrapperKey> {
        const FIELD: &str = "shares";
        let parsed = shares
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.expose().trim().is_empty())
            .map(|(i, s)| parse_share(i + 1, s.expose().trim()))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = parsed.first() else {
            return Err(Error::invalid(FIELD, "paste at least one share"));
        };
        let (id, m) = (first.id.clone(), first.m);
        for p in &parsed {
            if p.id != id {
                return Err(Error::invalid(
                    FIELD,
                    format!(
                        "share {} belongs to wrapper key {} but share 1 to wrapper key {id}; paste shares of one key",
                        p.position, p.id
                    ),
                ));
            }
            if p.m != m {
                return Err(Error::invalid(
                    FIELD,
                    format!(
                        "share {} is damaged: its threshold differs from share 1's",
                        p.position
                    ),
                ));
            }
        }
        for (i, a) in parsed.iter().enumerate() {
            if let Some(b) = parsed[..i].iter().find(|b| b.x == a.x) {
                return Err(Error::invalid(
                    FIELD,
                    format!(
                        "share {} repeats share {} (custodian share number {})",
                        a.position, b.position, a.x
                    ),
                ));
            }
        }
        if parsed.len() < m as usize {
            return Err(Error::invalid(
                FIELD,
                format!(
                    "at least {m} different shares are needed to rebuild wrapper key {id}; {} given",
                    parsed.len()
                ),
            ));
        }
        let shares: Vec<blahaj::Share> = parsed
            .iter()
            .map(|p| {
                let mut bytes = Vec::with_capacity(1 + p.y.len());
                bytes.push(p.x);
                bytes.extend_from_slice(p.y.expose());
                blahaj::Share::try_from(bytes.as_slice())
                    .map_err(|_| Error::invalid(FIELD, format!("share {} is damaged", p.position)))
            })
            .collect::<Result<_>>()?;
        let secret = blahaj::Sharks(m)
            .recover(&shares)
            .map_err(|e| Error::invalid(FIELD, format!("the shares cannot be combined: {e}")))?;
        let key = WrapperKey(SecretBytes::new(secret));
        if key.expose().len() != KEY_LEN || key.id() != id {
            return Err(Error::invalid(
                FIELD,
                "the shares do not rebuild the wrapper key: at least one of them is damaged",
            ));
        }
        Ok(key)
    }

    /// The data key of one backup, derived from the wrapper key and the
    /// backup's random salt.
    pub fn backup_key(&self, salt: &[u8]) -> Result<SecretBytes> {
        crate::crypto::hkdf_sha256(self.expose(), salt, b"custos backup payload v1", KEY_LEN)
    }
}

/// Fewest shares that rebuild the key: never one, so that no single
/// administrator holds the wrapper key (issue 12).
pub const MIN_CUSTODIANS: u8 = 2;

fn total_rule() -> String {
    format!("must be between {MIN_CUSTODIANS} and {MAX_CUSTODIANS}")
}

fn minimum_rule(n: i64) -> String {
    format!(
        "at least {MIN_CUSTODIANS} custodians are needed so that no single administrator holds the wrapper key, and at most the total number of custodians ({n})"
    )
}

fn check_counts(m: u8, n: u8) -> Result<()> {
    if !(MIN_CUSTODIANS..=MAX_CUSTODIANS).contains(&m) {
        return Err(Error::invalid("minimum_custodians", minimum_rule(n.into())));
    }
    if !(MIN_CUSTODIANS..=MAX_CUSTODIANS).contains(&n) {
        return Err(Error::invalid("total_custodians", total_rule()));
    }
    if m > n {
        return Err(Error::invalid("minimum_custodians", minimum_rule(n.into())));
    }
    Ok(())
}

/// Checks M and N before anything is created (the REST and web forms).
pub fn check_split(m: i64, n: i64) -> Result<(u8, u8)> {
    let m8 = u8::try_from(m).map_err(|_| Error::invalid("minimum_custodians", minimum_rule(n)))?;
    let n8 = u8::try_from(n).map_err(|_| Error::invalid("total_custodians", total_rule()))?;
    check_counts(m8, n8)?;
    Ok((m8, n8))
}

struct ParsedShare {
    position: usize,
    id: String,
    m: u8,
    x: u8,
    y: SecretBytes,
}

fn parse_share(position: usize, s: &str) -> Result<ParsedShare> {
    let bad = || {
        Error::invalid(
            "shares",
            format!(
                "share {position} is not a Custos wrapper-key share (they start with {SHARE_PREFIX}.)"
            ),
        )
    };
    let mut parts = s.split('.');
    if parts.next() != Some(SHARE_PREFIX) {
        return Err(bad());
    }
    let id = parts.next().ok_or_else(bad)?;
    let m = parts
        .next()
        .and_then(|v| v.parse::<u8>().ok())
        .ok_or_else(bad)?;
    let x = parts
        .next()
        .and_then(|v| v.parse::<u8>().ok())
        .ok_or_else(bad)?;
    let y = parts.next().ok_or_else(bad)?;
    if parts.next().is_some()
        || id.len() != 16
        || !id.bytes().all(|b| b.is_ascii_hexdigit())
        || x == 0
        || m == 0
    {
        return Err(bad());
    }
    let y = hex::decode(y).map_err(|_| {
        Error::invalid(
            "shares",
            format!("share {position} is damaged: it is not hexadecimal"),
        )
    })?;
    if y.len() != KEY_LEN {
        return Err(Error::invalid(
            "shares",
            format!("share {position} is damaged: it is incomplete"),
        ));
    }
    Ok(ParsedShare {
        position,
        id: id.to_ascii_lowercase(),
        m,
        x,
        y: SecretBytes::new(y),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0u32..(1 << n))
            .filter(|b| b.count_ones() as usize == k)
            .map(|b| (0..n).filter(|i| b & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn every_m_subset_rebuilds_and_no_smaller_one_does() {
        for (m, n) in [(2u8, 2u8), (2, 3), (3, 5)] {
            let key = WrapperKey::generate();
            let shares = key.split(m, n).expect("split");
            assert_eq!(shares.len(), n as usize);
            for set in subsets(n as usize, m as usize) {
                let chosen: Vec<SecretString> = set.iter().map(|i| shares[*i].clone()).collect();
                let back = WrapperKey::combine(&chosen).expect("M shares rebuild the key");
                assert_eq!(back.expose(), key.expose());
            }
            for set in subsets(n as usize, m as usize - 1) {
                let chosen: Vec<SecretString> = set.iter().map(|i| shares[*i].clone()).collect();
                let e = WrapperKey::combine(&chosen).expect_err("M-1 shares do not");
                assert!(
                    e.to_string()
                        .contains(&format!("at least {m} different shares")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn repeated_mixed_and_damaged_shares_are_refused() {
        let key = WrapperKey::generate();
        let shares = key.split(2, 3).expect("split");
        let e = WrapperKey::combine(&[shares[0].clone(), shares[0].clone()]).expect_err("repeat");
        assert!(e.to_string().contains("repeats share 1"), "{e}");
        let other = WrapperKey::generate().split(2, 3).expect("split");
        let e = WrapperKey::combine(&[shares[0].clone(), other[1].clone()]).expect_err("mixed");
        assert!(e.to_string().contains("belongs to wrapper key"), "{e}");
        let mut damaged = shares[1].expose().to_owned();
        let last = damaged.pop().expect("char");
        damaged.push(if last == '0' { '1' } else { '0' });
        let e = WrapperKey::combine(&[shares[0].clone(), SecretString::new(damaged)])
            .expect_err("damaged");
        assert!(e.to_string().contains("damaged"), "{e}");
        let e = WrapperKey::combine(&[SecretString::new("hello")]).expect_err("garbage");
        assert!(
            e.to_string().contains("not a Custos wrapper-key share"),
            "{e}"
        );
        assert!(check_split(3, 2).is_err());
        assert!(check_split(2, 17).is_err());
        assert_eq!(check_split(2, 2).expect("2 of 2"), (2, 2));
    }

    #[test]
    fn one_share_never_rebuilds_the_key() {
        for (m, n) in [(1, 1), (1, 3), (0, 2), (-1, 2)] {
            let e = check_split(m, n).expect_err("m < 2");
            assert!(
                matches!(
                    e,
                    Error::Invalid {
                        field: "minimum_custodians",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains("at least 2 custodians are needed so that no single administrator holds the wrapper key"),
                "{e}"
            );
        }
        assert!(WrapperKey::generate().split(1, 1).is_err());
    }
}
