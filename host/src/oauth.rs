//! OAuth 2.0 for connections: the providers' configuration, the scopes an
//! organisation's grants need, and the calls to a provider's authorization
//! server (authorization code with PKCE S256, refresh, RFC 7009
//! revocation), made with the `oauth2` crate over reqwest (rustls, no
//! redirects followed).
//!
//! Providers are configured in `<data-dir>/oauth.toml`, one table each:
//!
//! ```toml
//! [provider.slack]
//! integration = "slack"
//! client_id = "…"
//! client_secret_env = "CLANCY_SLACK_CLIENT_SECRET"   # or client_secret_file = "…"
//! authorize_url = "https://slack.com/oauth/v2/authorize"
//! token_url = "https://slack.com/api/oauth.v2.access"
//! revoke_url = "https://slack.com/api/auth.revoke"   # optional (RFC 7009)
//! redirect_uri = "http://127.0.0.1:8765/oauth/callback"
//! max_lifetime = "90d"                               # then an admin re-authorises
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, TokenResponse as _, TokenUrl,
};
use serde::Deserialize;

use crate::integrations::Integration;
use crate::manifest::Manifest;
use crate::vault::Secret;

/// The provider scope strings an integration's reads and writes need.
/// (Written down in the README's table; `files` needs no connection.)
pub fn provider_scopes(integration: Integration, write: bool) -> &'static [&'static str] {
    match (integration, write) {
        (Integration::Gmail, false) => &["https://www.googleapis.com/auth/gmail.readonly"],
        (Integration::Gmail, true) => &[
            "https://www.googleapis.com/auth/gmail.send",
            "https://www.googleapis.com/auth/gmail.modify",
        ],
        (Integration::Slack, false) => &["channels:history", "channels:read"],
        (Integration::Slack, true) => &["chat:write", "channels:read"],
        (Integration::Hubspot, false) => &["crm.objects.contacts.read", "crm.objects.deals.read"],
        (Integration::Hubspot, true) => &["crm.objects.deals.write"],
        (Integration::GoogleCalendar, false) => {
            &["https://www.googleapis.com/auth/calendar.events.readonly"]
        }
        (Integration::GoogleCalendar, true) => &["https://www.googleapis.com/auth/calendar.events"],
        (Integration::Quickbooks, _) => &["com.intuit.quickbooks.accounting"],
        (Integration::Files, _) => &[],
    }
}

/// The scopes `integration` needs for what `employees`' grants allow: reads
/// map to the provider's read scopes, writes to its write scopes; nothing
/// more is asked.
pub fn scopes_needed(integration: Integration, employees: &[Manifest]) -> BTreeSet<String> {
    let mut scopes = BTreeSet::new();
    for grant in employees
        .iter()
        .flat_map(|m| m.grants.iter())
        .filter(|g| g.integration == integration)
    {
        for action in &grant.actions {
            for s in provider_scopes(integration, action.is_write()) {
                scopes.insert((*s).to_string());
            }
        }
    }
    scopes
}

/// One provider's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its name (the table's).
    #[serde(skip)]
    pub name: String,
    /// The integration it serves.
    #[serde(deserialize_with = "integration")]
    pub integration: Integration,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// A file holding the client secret (readable by its owner only).
    pub client_secret_file: Option<std::path::PathBuf>,
    /// The authorization endpoint.
    pub authorize_url: String,
    /// The token endpoint.
    pub token_url: String,
    /// The RFC 7009 revocation endpoint, if the provider has one.
    pub revoke_url: Option<String>,
    /// Where the provider sends the operator back (matched exactly).
    pub redirect_uri: String,
    /// How long a connection lives before an admin must re-authorise it.
    #[serde(default = "default_lifetime", with = "humantime_serde_compat")]
    pub max_lifetime: Duration,
    /// How long one request to the provider may take.
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Where the service's API is (its real address unless a test or a
    /// proxy says otherwise); https, or http on loopback only.
    pub api_base: Option<String>,
    /// The account connected: for Gmail, the mailbox's address (mail is
    /// sent from it, and its domain is the organisation's own).
    pub account: Option<String>,
    /// Grant scope values mapped to the service's own ids (a label's,
    /// channel's or calendar's id; HubSpot's portal and QuickBooks'
    /// company (realm) ids, which must be listed: a scope not here is
    /// not this connection's).
    #[serde(default)]
    pub ids: std::collections::BTreeMap<String, String>,
    /// Connector settings (QuickBooks: `payment_account`, `expense_account`).
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_lifetime() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

mod humantime_serde_compat {
    use serde::Deserialize as _;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

fn integration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Integration, D::Error> {
    let name = String::deserialize(d)?;
    Integration::parse_connected(&name).map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    provider: std::collections::BTreeMap<String, ProviderConfig>,
}

/// An OAuth step failed. Never carries a token, code, verifier or secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// `oauth.toml` is missing, unreadable or invalid.
    #[error("OAuth configuration: {0}")]
    Config(String),
    /// The provider refused (its error code and description).
    #[error("the provider refused: {0}")]
    Refused(String),
    /// The provider could not be reached or answered nonsense.
    #[error("the provider failed: {0}")]
    Failed(String),
}

/// The providers configured in `<data-dir>/oauth.toml`.
pub fn load_providers(data_dir: &Path) -> Result<Vec<ProviderConfig>, OAuthError> {
    let path = data_dir.join("oauth.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(OAuthError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let file: ConfigFile = toml::from_str(&text)
        .map_err(|e| OAuthError::Config(format!("{}: {e}", path.display())))?;
    let mut providers = Vec::new();
    for (name, mut p) in file.provider {
        p.name = name;
        for (what, url) in [
            ("authorize_url", Some(&p.authorize_url)),
            ("token_url", Some(&p.token_url)),
            ("revoke_url", p.revoke_url.as_ref()),
            ("redirect_uri", Some(&p.redirect_uri)),
            ("api_base", p.api_base.as_ref()),
        ] {
            if let Some(url) = url {
                let parsed = reqwest::Url::parse(url).map_err(|e| {
                    OAuthError::Config(format!("provider {}: {what} {url:?}: {e}", p.name))
                })?;
                let loopback = matches!(parsed.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                    || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
                if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                    return Err(OAuthError::Config(format!(
                        "provider {}: {what} {url:?} must be https (http only on loopback)",
                        p.name
                    )));
                }
            }
        }
        providers.push(p);
    }
    Ok(providers)
}

/// A started authorization: the URL to send the operator to, the single-use
/// state and the PKCE verifier to keep until the provider sends them back.
pub struct Started {
    /// Where the operator approves the connection.
    pub url: String,
    /// The `state` the callback must carry.
    pub state: Secret,
    /// The PKCE verifier for the code exchange.
    pub verifier: Secret,
}

/// Tokens from a code exchange or a refresh.
pub struct Tokens {
    /// The access token.
    pub access: Secret,
    /// The refresh token (a rotated one replaces the old).
    pub refresh: Option<Secret>,
    /// Seconds until the access token expires, if the provider said.
    pub expires_in: Option<Duration>,
    /// The scopes granted, if the provider said.
    pub scopes: Option<Vec<String>>,
}

/// The largest answer read from an authorization server.
pub const MAX_ANSWER_BYTES: u64 = 256 * 1024;

fn http(timeout: Duration) -> Result<reqwest::blocking::Client, OAuthError> {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .build()
        .map_err(|e| OAuthError::Failed(format!("cannot start the HTTP client: {e}")))
}

/// Why a request to the token endpoint failed (never its body).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Sending or reading failed (unreachable, timed out, reset).
    #[error("{0}")]
    Io(String),
    /// The answer was larger than [`MAX_ANSWER_BYTES`].
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    /// The server answered with a redirect (never followed).
    #[error("the server answered with a redirect, which is not followed")]
    Redirect,
}

/// The token endpoint's HTTP client: no redirects, bounded in time and in
/// the size of what it reads.
fn bounded(
    client: &reqwest::blocking::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TransportError> {
    use std::io::Read as _;
    let (parts, body) = request.into_parts();
    let io = |e: reqwest::Error| TransportError::Io(e.without_url().to_string());
    let mut response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .map_err(io)?;
    if response.status().is_redirection() {
        return Err(TransportError::Redirect);
    }
    let mut body = Vec::new();
    (&mut response)
        .take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| TransportError::Io(e.to_string()))?;
    if body.len() as u64 > MAX_ANSWER_BYTES {
        return Err(TransportError::TooLarge);
    }
    let mut answer = oauth2::http::Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        answer = answer.header(name.as_str(), value.as_bytes());
    }
    answer
        .body(body)
        .map_err(|e| TransportError::Io(e.to_string()))
}

type Client = oauth2::Client<
    oauth2::StandardErrorResponse<oauth2::basic::BasicErrorResponseType>,
    oauth2::StandardTokenResponse<oauth2::EmptyExtraTokenFields, oauth2::basic::BasicTokenType>,
    oauth2::StandardTokenIntrospectionResponse<
        oauth2::EmptyExtraTokenFields,
        oauth2::basic::BasicTokenType,
    >,
    oauth2::StandardRevocableToken,
    oauth2::StandardErrorResponse<oauth2::RevocationErrorResponseType>,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

impl ProviderConfig {
    /// The client secret, from the environment or its file.
    fn client_secret(&self) -> Result<Option<Secret>, OAuthError> {
        if let Some(var) = &self.client_secret_env {
            let value = std::env::var(var).map_err(|_| {
                OAuthError::Config(format!(
                    "provider {}: the client secret's variable {var} is not set",
                    self.name
                ))
            })?;
            return Ok(Some(Secret::new(value.trim())));
        }
        if let Some(file) = &self.client_secret_file {
            if let Ok(Some(mode)) = crate::keys::shared_mode(file) {
                return Err(OAuthError::Config(format!(
                    "provider {}: the client secret file {} may be read by others (mode {mode:o})",
                    self.name,
                    file.display()
                )));
            }
            let value = std::fs::read_to_string(file).map_err(|e| {
                OAuthError::Config(format!(
                    "provider {}: cannot read {}: {e}",
                    self.name,
                    file.display()
                ))
            })?;
            return Ok(Some(Secret::new(value.trim())));
        }
        Ok(None)
    }

    fn client(&self) -> Result<Client, OAuthError> {
        let bad = |what: &str, e: String| {
            OAuthError::Config(format!("provider {}: {what}: {e}", self.name))
        };
        let mut client = oauth2::basic::BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(
                AuthUrl::new(self.authorize_url.clone())
                    .map_err(|e| bad("authorize_url", e.to_string()))?,
            )
            .set_token_uri(
                TokenUrl::new(self.token_url.clone())
                    .map_err(|e| bad("token_url", e.to_string()))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(self.redirect_uri.clone())
                    .map_err(|e| bad("redirect_uri", e.to_string()))?,
            );
        if let Some(secret) = self.client_secret()? {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_string()));
        }
        Ok(client)
    }

    /// Start an authorization asking for `scopes`: a fresh state and PKCE
    /// (S256) verifier.
    pub fn start(&self, scopes: &BTreeSet<String>) -> Result<Started, OAuthError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .client()?
            .authorize_url(CsrfToken::new_random)
            .add_scopes(scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Started {
            url: url.to_string(),
            state: Secret::new(state.secret().clone()),
            verifier: Secret::new(verifier.secret().clone()),
        })
    }

    /// Exchange an authorization code (with its PKCE verifier).
    pub fn exchange(&self, code: &Secret, verifier: &Secret) -> Result<Tokens, OAuthError> {
        let client = http(self.timeout)?;
        let answer = self
            .client()?
            .exchange_code(AuthorizationCode::new(code.expose().to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_string()))
            .request(&|r| bounded(&client, r))
            .map_err(token_error)?;
        Ok(tokens(&answer))
    }

    /// Use a refresh token (the answer may carry a rotated one).
    pub fn refresh(&self, refresh: &Secret) -> Result<Tokens, OAuthError> {
        let client = http(self.timeout)?;
        let answer = self
            .client()?
            .exchange_refresh_token(&RefreshToken::new(refresh.expose().to_string()))
            .request(&|r| bounded(&client, r))
            .map_err(token_error)?;
        Ok(tokens(&answer))
    }

    /// Revoke a token at the provider (RFC 7009): a form POST with the
    /// client's credentials (the `oauth2` crate refuses a revocation URL
    /// that is not https, and the tests' provider is on loopback); `Ok(false)`
    /// when the provider has no revocation endpoint.
    pub fn revoke(&self, token: &Secret, refresh: bool) -> Result<bool, OAuthError> {
        let Some(url) = &self.revoke_url else {
            return Ok(false);
        };
        let mut request = http(self.timeout)?.post(url).form(&[
            ("token", token.expose()),
            (
                "token_type_hint",
                if refresh {
                    "refresh_token"
                } else {
                    "access_token"
                },
            ),
        ]);
        request = match self.client_secret()? {
            Some(secret) => request.basic_auth(&self.client_id, Some(secret.expose())),
            None => request.form(&[("client_id", self.client_id.as_str())]),
        };
        let response = request.send().map_err(|e| {
            OAuthError::Failed(format!(
                "the revocation request failed: {}",
                e.without_url()
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        if status.is_redirection() {
            return Err(OAuthError::Failed(TransportError::Redirect.to_string()));
        }
        // The error code only: a body could echo what it was sent.
        let mut body = Vec::new();
        let _ = std::io::Read::read_to_end(
            &mut std::io::Read::take(response, MAX_ANSWER_BYTES),
            &mut body,
        );
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(crate::human::line))
            .unwrap_or_default();
        Err(OAuthError::Refused(format!(
            "revocation answered {status} {code}"
        )))
    }
}

fn tokens(
    answer: &oauth2::StandardTokenResponse<
        oauth2::EmptyExtraTokenFields,
        oauth2::basic::BasicTokenType,
    >,
) -> Tokens {
    Tokens {
        access: Secret::new(answer.access_token().secret().clone()),
        refresh: answer
            .refresh_token()
            .map(|r| Secret::new(r.secret().clone())),
        expires_in: answer.expires_in(),
        scopes: answer
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect()),
    }
}

/// A token endpoint's refusal or failure, without anything it was sent.
fn token_error<RE: std::error::Error + 'static>(
    e: oauth2::RequestTokenError<
        RE,
        oauth2::StandardErrorResponse<oauth2::basic::BasicErrorResponseType>,
    >,
) -> OAuthError {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => OAuthError::Refused(format!(
            "{}{}",
            r.error(),
            r.error_description()
                .map(|d| format!(": {}", crate::human::line(d)))
                .unwrap_or_default()
        )),
        other => OAuthError::Failed(describe(&other)),
    }
}

/// An error's kind in a line (never a response body: it could echo a token).
fn describe<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    e: &oauth2::RequestTokenError<RE, T>,
) -> String {
    match e {
        oauth2::RequestTokenError::Request(r) => format!("the request failed: {r}"),
        oauth2::RequestTokenError::Parse(_, _) => "the answer is not a token response".into(),
        oauth2::RequestTokenError::Other(o) => o.clone(),
        oauth2::RequestTokenError::ServerResponse(_) => "the provider refused".into(),
    }
}
