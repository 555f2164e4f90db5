//! §6 administrator passwords: the policy and the memory-hard hash (argon2id).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::model::is_special;
use crate::{Error, Result};

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

/// Checks a new password against §6; `field` names the form field.
pub fn check_policy(field: &'static str, login: &str, password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at least {MIN_LEN} characters"),
        ));
    }
    if n > MAX_LEN {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_LEN} characters"),
        ));
    }
    if !password.chars().any(|c| c.is_uppercase()) {
        return Err(Error::invalid(field, "must contain an upper-case letter"));
    }
    if !password.chars().any(|c| c.is_lowercase()) {
        return Err(Error::invalid(field, "must contain a lower-case letter"));
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(Error::invalid(field, "must contain a digit"));
    }
    if !password.chars().any(is_special) {
        return Err(Error::invalid(field, "must contain a special character"));
    }
    if password.eq_ignore_ascii_case(login) {
        return Err(Error::invalid(field, "must not be the same as the login"));
    }
    Ok(())
}

/// Hashes with argon2id and a random salt (PHC string format).
pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| Error::Crypto("password hashing failed"))
}

/// Verifies in constant time (argon2's comparison).
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("password", "bob", "Str0ng!pass").is_ok());
        assert!(check_policy("password", "bob", "weak").is_err());
        assert!(check_policy("password", "bob", "alllower1!").is_err());
        assert!(check_policy("password", "bob", "NoDigits!!").is_err());
        assert!(check_policy("password", "bob", "NoSpecial12").is_err());
        assert!(check_policy("password", "Adm1n!Adm1n", "adm1n!adm1n").is_err());
    }

    #[test]
    fn hash_and_verify() {
        let h = hash("Str0ng!pass").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("Str0ng!pass", &h));
        assert!(!verify("Str0ng!pasS", &h));
    }
}
