//! The agent API of the appliance, as seen from a host: the wire types, the four
//! calls, and the failover rule.
//!
//! Failover: a call goes to the primary first. Only when the primary does not
//! answer (connection refused, TLS handshake failed, timeout) and a failover is
//! configured is it repeated against the failover. An answer from the primary, an
//! error status included, is final.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use reqwest::{Client, Response, Url};
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A host and port of the appliance, as typed by the operator: `HOST`,
/// `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `HOST[:PORT]`, taking `default_port` when none is given.
    pub fn parse(text: &str, default_port: u16) -> Result<Self> {
        let text = text.trim();
        let invalid = || anyhow!("{text:?} is not HOST or HOST:PORT");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(invalid)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
            }
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address: a port needs the bracketed form.
            (text, None)
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/?#@[]".contains(c))
        {
            return Err(invalid());
        }
        let port = match port {
            None => default_port,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(anyhow!(
                        "{text:?}: the port must be a number from 1 to 65535"
                    ));
                }
            },
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }

    fn url(&self, path: &[&str]) -> Result<Url> {
        let mut url = Url::parse(&format!("https://{self}/"))
            .with_context(|| format!("{self} does not make a valid URL"))?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("https://{self}/ cannot take a path"))?
            .clear()
            .extend(path);
        Ok(url)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a call did not produce a result.
#[derive(Debug)]
pub enum Failure {
    /// The server did not answer: no connection, no TLS session, or a timeout.
    Unreachable(String),
    /// The server answered with an error, or the answer was unusable.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Failed(error)
    }
}

impl Failure {
    /// For commands that have nothing else to try: an unreachable server is an
    /// ordinary error. `endpoint` names the server when the reason does not.
    pub fn into_error(self, endpoint: Option<&Endpoint>) -> anyhow::Error {
        match (self, endpoint) {
            (Failure::Unreachable(reason), Some(endpoint)) => {
                anyhow!("cannot reach {endpoint}: {reason}")
            }
            (Failure::Unreachable(reason), None) => anyhow!("appliance unreachable: {reason}"),
            (Failure::Failed(error), _) => error,
        }
    }
}

/// The error body of every non-2xx answer of the agent API.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
    #[serde(default)]
    field: Option<String>,
}

/// An error the appliance answered with. Shown as its message (and field): the
/// appliance words it for the operator; the code stands in for an empty message.
#[derive(Debug)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "the appliance refused the request ({})", self.code)?;
        } else {
            f.write_str(&self.message)?;
        }
        if let Some(field) = &self.field {
            write!(f, " (field: {field})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// `GET /agent/v1/ca`.
#[derive(Debug, Deserialize)]
pub struct CaResponse {
    pub ca_certificate: String,
    pub fingerprint: String,
}

/// `POST /agent/v1/register` body.
#[derive(Serialize)]
pub struct RegisterRequest<'a> {
    pub host_name: &'a str,
    pub domain: &'a str,
    pub shared_secret: &'a str,
    pub csr: &'a str,
}

impl fmt::Debug for RegisterRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("host_name", &self.host_name)
            .field("domain", &self.domain)
            .field("shared_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// `POST /agent/v1/register` answer.
#[derive(Debug, Deserialize)]
pub struct RegisterResponse {
    pub certificate: String,
    pub ca_certificate: String,
    pub key_port: u16,
    pub host_name: String,
    pub domain: String,
}

/// `GET /agent/v1/keys/NAME` answer. `Debug` leaves the key out.
#[derive(Deserialize)]
pub struct KeyResponse {
    pub name: String,
    pub domain: String,
    pub version: u32,
    pub current_version: u32,
    pub algorithm: String,
    pub key_type: String,
    pub refresh_period_minutes: u32,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Base64 key material; moved into a zeroizing buffer as soon as it is read.
    pub key: String,
    /// The appliance's failovers (§11 Notify All Hosts), which the agent
    /// keeps for the next time the primary does not answer.
    #[serde(default)]
    pub failovers: Vec<FailoverNotice>,
}

/// A failover the appliance told of: where its key service is.
#[derive(Debug, Clone, Deserialize)]
pub struct FailoverNotice {
    pub name: String,
    pub address: String,
    pub port: u16,
}

impl FailoverNotice {
    /// `HOST:PORT`, as `--failover` takes it.
    pub fn endpoint(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

impl fmt::Debug for KeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyResponse")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// `GET /agent/v1/status` answer.
#[derive(Debug, Deserialize)]
pub struct StatusResponse {
    pub host_name: String,
    pub domain: String,
    pub registered_at: String,
    pub last_contact: Option<String>,
    pub server_time: String,
    pub security_mode: String,
}

/// One HTTPS client: a TLS configuration and the per-call timeout.
pub struct Agent {
    client: Client,
    timeout: Duration,
}

impl Agent {
    pub fn new(tls: ClientConfig, timeout: Duration) -> Result<Self> {
        let client = Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(timeout)
            .timeout(timeout)
            // The appliance is reached directly; a proxy from the environment
            // would only add a party to trust-on-first-use.
            .no_proxy()
            // An answer is final; a redirect could only lead away from the appliance.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("custos-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTPS client")?;
        Ok(Agent { client, timeout })
    }

    pub async fn ca(&self, endpoint: &Endpoint) -> Result<CaResponse, Failure> {
        let url = endpoint.url(&["agent", "v1", "ca"])?;
        self.receive(self.client.get(url).send().await).await
    }

    pub async fn register(
        &self,
        endpoint: &Endpoint,
        request: &RegisterRequest<'_>,
    ) -> Result<RegisterResponse, Failure> {
        let url = endpoint.url(&["agent", "v1", "register"])?;
        self.receive(self.client.post(url).json(request).send().await)
            .await
    }

    pub async fn key(
        &self,
        endpoint: &Endpoint,
        name: &str,
        version: Option<u32>,
    ) -> Result<KeyResponse, Failure> {
        let url = endpoint.url(&["agent", "v1", "keys", name])?;
        let mut request = self.client.get(url);
        if let Some(version) = version {
            request = request.query(&[("version", version)]);
        }
        self.receive(request.send().await).await
    }

    pub async fn status(&self, endpoint: &Endpoint) -> Result<StatusResponse, Failure> {
        let url = endpoint.url(&["agent", "v1", "status"])?;
        self.receive(self.client.get(url).send().await).await
    }

    async fn receive<T: DeserializeOwned>(
        &self,
        sent: reqwest::Result<Response>,
    ) -> Result<T, Failure> {
        let response = sent.map_err(|error| self.failure(error))?;
        let status = response.status();
        let url = response.url().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| self.failure(error))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(error) => Failure::Failed(
                    ServerError {
                        code: error.error,
                        message: error.message,
                        field: error.field,
                    }
                    .into(),
                ),
                Err(_) => Failure::Failed(anyhow!(
                    "{url} answered {status} without an agent API error body"
                )),
            });
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("{url} answered {status} with an unexpected body"))
            .map_err(Failure::Failed)
    }

    fn failure(&self, error: reqwest::Error) -> Failure {
        if error.is_timeout() {
            Failure::Unreachable(format!("no answer within {} s", self.timeout.as_secs_f64()))
        } else if error.is_connect() {
            Failure::Unreachable(cause(&error))
        } else {
            Failure::Failed(anyhow::Error::new(error).context("talking to the appliance"))
        }
    }
}

/// The causes under reqwest's "error sending request for url (…)", which name
/// what went wrong: "tcp connect error: Connection refused (os error 111)".
fn cause(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = error.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// Runs `call` against the primary and, when it does not answer, against the
/// failover, telling the operator on stderr. An unreachable outcome names the
/// servers it tried.
pub async fn with_failover<T, F, Fut>(
    primary: &Endpoint,
    failover: Option<&Endpoint>,
    call: F,
) -> Result<T, Failure>
where
    F: Fn(Endpoint) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    match (call(primary.clone()).await, failover) {
        (Err(Failure::Unreachable(reason)), Some(failover)) => {
            eprintln!("primary unreachable ({reason}); using failover {failover}");
            match call(failover.clone()).await {
                Err(Failure::Unreachable(failover_reason)) => Err(Failure::Unreachable(format!(
                    "primary {primary}: {reason}; failover {failover}: {failover_reason}"
                ))),
                other => other,
            }
        }
        (Err(Failure::Unreachable(reason)), None) => {
            Err(Failure::Unreachable(format!("{primary}: {reason}")))
        }
        (outcome, _) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_takes_the_default_port() {
        assert_eq!(
            Endpoint::parse("custos.example", 8444).expect("host"),
            Endpoint {
                host: "custos.example".to_owned(),
                port: 8444
            }
        );
        assert_eq!(
            Endpoint::parse("10.0.0.2:8447", 8444).expect("host:port"),
            Endpoint {
                host: "10.0.0.2".to_owned(),
                port: 8447
            }
        );
    }

    #[test]
    fn endpoint_understands_ipv6() {
        let bracketed = Endpoint::parse("[fd00::2]:8447", 8444).expect("bracketed");
        assert_eq!(bracketed.host, "fd00::2");
        assert_eq!(bracketed.port, 8447);
        assert_eq!(bracketed.to_string(), "[fd00::2]:8447");
        let bare = Endpoint::parse("fd00::2", 8444).expect("bare");
        assert_eq!(bare.port, 8444);
        assert_eq!(Endpoint::parse("[fd00::2]", 8444).expect("no port"), bare);
    }

    #[test]
    fn endpoint_refuses_nonsense() {
        for text in [
            "",
            ":8443",
            "custos.example:",
            "custos.example:0",
            "custos.example:70000",
            "custos.example:port",
            "https://custos.example",
            "custos example",
            "[fd00::2",
            "[fd00::2]8443",
        ] {
            assert!(Endpoint::parse(text, 8443).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn endpoint_url_escapes_the_key_name() {
        let endpoint = Endpoint::parse("custos.example", 8444).expect("endpoint");
        let url = endpoint
            .url(&["agent", "v1", "keys", "a b/c"])
            .expect("url");
        assert_eq!(
            url.as_str(),
            "https://custos.example:8444/agent/v1/keys/a%20b%2Fc"
        );
    }

    #[test]
    fn server_error_shows_message_and_field() {
        let error = ServerError {
            code: "invalid_field".to_owned(),
            message: "the host name is too long".to_owned(),
            field: Some("host_name".to_owned()),
        };
        assert_eq!(
            error.to_string(),
            "the host name is too long (field: host_name)"
        );
    }

    fn endpoint(host: &str) -> Endpoint {
        Endpoint::parse(host, 8444).expect("endpoint")
    }

    #[tokio::test]
    async fn failover_is_used_only_when_the_primary_does_not_answer() {
        let primary = endpoint("primary");
        let failover = endpoint("failover");

        let answered = with_failover(&primary, Some(&failover), |to| async move {
            if to.host == "primary" {
                Err(Failure::Unreachable("connection refused".to_owned()))
            } else {
                Ok(to.host)
            }
        })
        .await;
        assert_eq!(answered.expect("failover answers"), "failover");

        let refused = with_failover(&primary, Some(&failover), |to| async move {
            if to.host == "primary" {
                Err::<String, _>(Failure::Failed(anyhow!("not registered")))
            } else {
                Ok(to.host)
            }
        })
        .await;
        assert!(matches!(refused, Err(Failure::Failed(_))));

        let nobody = with_failover(&primary, Some(&failover), |_| async {
            Err::<(), _>(Failure::Unreachable("timed out".to_owned()))
        })
        .await;
        match nobody {
            Err(Failure::Unreachable(reason)) => assert_eq!(
                reason,
                "primary primary:8444: timed out; failover failover:8444: timed out"
            ),
            other => panic!("unexpected {other:?}"),
        }

        let alone = with_failover(&primary, None, |_| async {
            Err::<(), _>(Failure::Unreachable("timed out".to_owned()))
        })
        .await;
        assert!(
            matches!(alone, Err(Failure::Unreachable(reason)) if reason == "primary:8444: timed out")
        );
    }
}
