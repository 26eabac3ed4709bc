//! The CLI through a running daemon: while `clancy serve` owns the data dir
//! (or `--server URL` names one), every command that reads or changes the
//! org's records goes through the daemon's API with the token in
//! `CLANCY_TOKEN`, instead of failing on the store's lock. The token says
//! who acts, so `--as` is refused there.

use anyhow::{Context, Result};
use serde_json::Value;

use super::{Global, data_dir};
use crate::human;

/// Where a daemon says it serves a data dir, while it runs.
pub(in crate::cli) const DAEMON_FILE: &str = "daemon.json";

/// A daemon the CLI talks to instead of opening the data dir.
pub(in crate::cli) struct Remote {
    pub url: String,
    pub token: String,
    pub client: reqwest::blocking::Client,
}

/// A refusal the daemon answered, as one line: the status, the problem's
/// title and detail (escaped: a detail can quote a guest's text).
fn refused(status: u16, body: &Value) -> anyhow::Error {
    let title = body["title"].as_str().unwrap_or("refused");
    let detail = body["detail"].as_str().unwrap_or("");
    anyhow::anyhow!(
        "the daemon answered {status} {}: {}",
        human::line(title),
        human::line(detail)
    )
}

impl Remote {
    /// Send a request with the token; the answer as it starts to arrive.
    fn response(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response> {
        request
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("cannot reach the daemon at {}", self.url))
    }

    /// Send a request with the token; the status and the JSON answer
    /// (`null` when it is not JSON).
    pub fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<(u16, Value)> {
        let response = self.response(request)?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .with_context(|| format!("the daemon at {} broke off its answer", self.url))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `GET path`, its body copied to `out` as it arrives (an export: the
    /// daemon writes it as it reads, so neither side holds it whole). A
    /// refusal is an error, and so is an answer broken off midway (the
    /// daemon aborts the body when its export fails).
    pub fn download(&self, path: &str, out: &mut dyn std::io::Write) -> Result<()> {
        let mut response = self.response(self.client.get(format!("{}{path}", self.url)))?;
        let status = response.status().as_u16();
        if status != 200 {
            let text = response.text().unwrap_or_default();
            return Err(refused(
                status,
                &serde_json::from_str(&text).unwrap_or(Value::Null),
            ));
        }
        std::io::copy(&mut response, out).with_context(|| {
            format!(
                "the daemon at {} broke off its answer to {path}, so the export is incomplete",
                self.url
            )
        })?;
        out.flush()?;
        Ok(())
    }

    /// `GET path?query`; a refusal is an error.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let (status, body) =
            self.send(self.client.get(format!("{}{path}", self.url)).query(query))?;
        if !(200..300).contains(&status) {
            return Err(refused(status, &body));
        }
        Ok(body)
    }

    /// `POST path` with a JSON body; the status and answer, whatever they are.
    pub fn post_status(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.send(
            self.client
                .post(format!("{}{path}", self.url))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
        )
    }

    /// `POST path` with a JSON body; a refusal is an error.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let (status, answer) = self.post_status(path, body)?;
        if !(200..300).contains(&status) {
            return Err(refused(status, &answer));
        }
        Ok(answer)
    }

    /// Every item of a paginated list: follows `next_cursor`, passing it
    /// back as `cursor_param`.
    pub fn all_pages(
        &self,
        path: &str,
        query: &[(&str, String)],
        cursor_param: &str,
    ) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let mut q = query.to_vec();
            if let Some(c) = &cursor {
                q.push((cursor_param, c.clone()));
            }
            let page = self.get(path, &q)?;
            if let Some(list) = page["items"].as_array() {
                items.extend(list.iter().cloned());
            }
            cursor = match &page["next_cursor"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            match &cursor {
                None => return Ok(items),
                // A cursor given twice would page forever.
                Some(c) if !seen.insert(c.clone()) => {
                    anyhow::bail!("the daemon gave the same page cursor twice for {path}")
                }
                Some(_) => {}
            }
        }
    }
}

/// Refuse `--as` through a daemon: the token says who acts.
pub(in crate::cli) fn no_as(by: &Option<String>) -> Result<()> {
    if by.is_some() {
        anyhow::bail!("--as does not apply through the daemon: the token says who you are");
    }
    Ok(())
}

/// The daemon to go through: `--server`, or the one serving the data dir
/// (it answers its health check). `None`: work on the data dir directly.
/// `CLANCY_CA_CERT` names a PEM certificate to trust besides the system's
/// (a daemon's own, self-signed one).
pub(in crate::cli) fn remote(global: &Global) -> Result<Option<Remote>> {
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = std::env::var_os("CLANCY_CA_CERT").filter(|v| !v.is_empty()) {
        let pem = std::fs::read(&ca)
            .with_context(|| format!("CLANCY_CA_CERT: cannot read {}", ca.to_string_lossy()))?;
        let cert = reqwest::Certificate::from_pem(&pem).with_context(|| {
            format!(
                "CLANCY_CA_CERT: {} is not a PEM certificate",
                ca.to_string_lossy()
            )
        })?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build()?;
    let url = match &global.server {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let file = data_dir(global)?.join(DAEMON_FILE);
            let Ok(text) = std::fs::read_to_string(&file) else {
                return Ok(None);
            };
            let served: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", file.display()))?;
            let Some(url) = served["url"].as_str().map(str::to_string) else {
                return Ok(None);
            };
            // The token goes where this file points: only ever to this
            // machine (a daemon elsewhere is named with --server).
            let local = reqwest::Url::parse(&url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && matches!(
                        u.host(),
                        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
                    )
            });
            if !local {
                anyhow::bail!(
                    "{} names {url:?}, which is not a daemon on this machine; pass --server URL to talk to a daemon elsewhere",
                    file.display()
                );
            }
            // A file left by a daemon that died answers nothing: work locally.
            let alive = client
                .get(format!("{url}/healthz"))
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if !alive {
                return Ok(None);
            }
            url
        }
    };
    let token = std::env::var("CLANCY_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| {
            format!(
                "a daemon serves this data dir at {url}: set CLANCY_TOKEN to an API token (`clancy tokens create`, made while the daemon is stopped, or POST /api/v1/tokens signed in)"
            )
        })?;
    let remote = Remote {
        url,
        token: token.trim().to_string(),
        client,
    };
    // The token says the organisation: naming another is a mistake to
    // stop, not to act on the token's own.
    if let Some(named) = &global.org {
        let mine = remote.get("/api/v1/organisation", &[])?;
        if mine["name"].as_str() != Some(named.as_str()) {
            anyhow::bail!(
                "--org {named} names another organisation than the token's ({}): nothing was done",
                human::line(mine["name"].as_str().unwrap_or_default())
            );
        }
    }
    Ok(Some(remote))
}
