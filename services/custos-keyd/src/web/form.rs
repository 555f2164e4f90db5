//! Submitted forms: the body read as name/value pairs (repeated names for
//! check boxes), the session's CSRF token checked before anything else, and
//! the refusals of the store put next to the field they name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};

use super::session::csrf_matches;
use super::{Ctx, WebError, WebResult};
use crate::state::AppState;

/// Largest form body the console reads (a licence file fits many times).
const MAX_FORM: usize = 256 * 1024;

/// A form's name/value pairs, in order.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

/// Forms carry passwords and shared secrets: wipe them when done.
impl Drop for Form {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, v) in &mut self.pairs {
            v.zeroize();
        }
    }
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form {
            pairs: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> Form {
        Form { pairs }
    }

    /// The first value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The value of `name` trimmed, or None when empty.
    pub fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name).trim().to_owned()).filter(|s| !s.is_empty())
    }

    /// Every value of `name` (check boxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a check box was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, v)| k == name && !v.is_empty())
    }

    /// Sets a value (defaults of a form shown for the first time).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Form {
        self.pairs.retain(|(k, _)| k != name);
        self.pairs.push((name.to_owned(), value.into()));
        self
    }

    /// A secret field, moved into a type that is never logged.
    pub fn secret(&self, name: &str) -> appliance::secret::SecretString {
        appliance::secret::SecretString::new(self.get(name))
    }

    /// An integer field, or a refusal naming it.
    pub fn int(&self, name: &'static str, label: &str) -> Result<Option<i64>, appliance::Error> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                appliance::Error::invalid(name, format!("{label} must be a whole number"))
            }),
        }
    }
}

/// The refusals of one submitted form: field name → message. A message
/// with no field on the form is shown above it.
#[derive(Debug, Default)]
pub struct Errors(Vec<(String, String)>);

impl Errors {
    pub fn none() -> Errors {
        Errors(Vec::new())
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_owned(), message.into()));
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Messages whose field is not among `fields` (shown above the form).
    pub fn general(&self, fields: &[&str]) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| !fields.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every message, "field: message" where there is a field (for a
    /// refused action on a list, shown above it).
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| {
                if k.is_empty() {
                    v.clone()
                } else {
                    format!("{k}: {v}")
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Turns a refusal of the store into a message next to its field; a
    /// fault of the appliance itself stays an error page.
    pub fn from_core(e: appliance::Error) -> Result<Errors, WebError> {
        use appliance::Error as E;
        let mut out = Errors::none();
        match &e {
            E::Invalid { field, rule } | E::Conflict { field, rule } => {
                out.add(field, rule.clone())
            }
            E::NotFound { .. }
            | E::Forbidden(_)
            | E::Licence(_)
            | E::BadCredentials
            | E::Locked
            | E::Failover { .. } => out.add("", e.to_string()),
            E::PasswordChangeRequired
            | E::Store(_)
            | E::Crypto(_)
            | E::Certificate(_)
            | E::Io { .. }
            | E::SchemaTooNew { .. } => return Err(WebError::Core(e)),
        }
        Ok(out)
    }

    pub fn from_web(e: WebError) -> Result<Errors, WebError> {
        match e {
            WebError::Core(e) => Errors::from_core(e),
            WebError::BadRequest(m) | WebError::Forbidden(m) => {
                let mut out = Errors::none();
                out.add("", m);
                Ok(out)
            }
            other => Err(other),
        }
    }
}

/// Refuses a POST whose `Origin` is another site (a second line of defence
/// behind the token and SameSite cookies). Browsers send the real origin
/// because the console's referrer policy is `same-origin`; with
/// `no-referrer` they would send `null`.
pub(super) fn same_origin(parts: &axum::http::request::Parts) -> bool {
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return true;
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin.to_str().ok() == Some(&format!("https://{host}"))
}

/// Reads a form body (URL-encoded or multipart).
/// A form body axum could not read: over the route's body limit (a licence
/// form's, say) is a 413, anything else a 400.
fn unreadable(status: StatusCode, text: String) -> WebError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        WebError::TooLarge("form: larger than this page accepts".into())
    } else {
        WebError::BadRequest(format!("form: {text}"))
    }
}

pub async fn read_body(req: Request) -> WebResult<(axum::http::request::Parts, Form)> {
    let (parts, body) = req.into_parts();
    if !same_origin(&parts) {
        return Err(WebError::Csrf);
    }
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let req = Request::from_parts(parts.clone(), body);
    let form = if ctype.starts_with("multipart/form-data") {
        let mut mp = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|e| WebError::BadRequest(format!("form: {}", e.body_text())))?;
        let refused =
            |e: axum::extract::multipart::MultipartError| unreadable(e.status(), e.body_text());
        let mut pairs = Vec::new();
        let mut size = 0usize;
        while let Some(field) = mp.next_field().await.map_err(refused)? {
            let name = field.name().unwrap_or("").to_owned();
            let bytes = field.bytes().await.map_err(refused)?;
            size += bytes.len();
            if size > MAX_FORM {
                return Err(WebError::BadRequest(
                    "form: larger than the console accepts (256 KiB)".into(),
                ));
            }
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                WebError::BadRequest(format!("{name}: the file must be text (UTF-8)"))
            })?;
            pairs.push((name, text));
        }
        Form::from_pairs(pairs)
    } else {
        let bytes = Bytes::from_request(req, &())
            .await
            .map_err(|e| unreadable(e.status(), e.body_text()))?;
        if bytes.len() > MAX_FORM {
            return Err(WebError::BadRequest(
                "form: larger than the console accepts (256 KiB)".into(),
            ));
        }
        Form::parse(&bytes)
    };
    Ok((parts, form))
}

/// A POST from a signed-in administrator's own console page: the session
/// is valid and the form carries its CSRF token.
pub struct Posted(pub Ctx, pub Form);

impl FromRequest<Arc<AppState>> for Posted {
    type Rejection = WebError;
    async fn from_request(req: Request, st: &Arc<AppState>) -> WebResult<Posted> {
        let (mut parts, form) = read_body(req).await?;
        let ctx = Ctx::from_request_parts(&mut parts, st).await?;
        if !csrf_matches(&ctx.session.csrf, Some(form.get("csrf"))) {
            let what = format!(
                "web form refused: CSRF token missing or wrong (POST {})",
                parts.uri.path()
            );
            ctx.store(move |s, a| s.log_action(a, appliance::model::Severity::Warn, &what))
                .await?;
            return Err(WebError::Csrf);
        }
        Ok(Posted(ctx, form))
    }
}
