//! The daemon over TLS: a real certificate made by openssl, the real
//! binary, a client that trusts only that certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::daemon::Served;
use crate::env::{clancy, clancy_command, stderr, stdout};

/// A test CA, and a server certificate for 127.0.0.1 it signed with its
/// key (0600): returns (CA certificate, server certificate, server key).
fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| -> Result<()> {
        let made = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .context("openssl")?;
        anyhow::ensure!(made.status.success(), "openssl {args:?}: {}", stderr(&made));
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=clancy test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ])?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path("key.pem"), std::fs::Permissions::from_mode(0o600))?;
    Ok((path("ca.pem"), path("cert.pem"), path("key.pem")))
}

fn trusting(cert: &Path) -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(cert)?)?)
        .timeout(Duration::from_secs(30))
        .build()?)
}

#[test]
fn the_daemon_serves_https_with_secure_cookies_and_refuses_a_key_others_may_read() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (ca, cert, key) = certificate(dir.path())?;
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());

    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    let exposed = clancy(
        &data,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert_arg,
            "--tls-key",
            &key_arg,
        ],
    )?;
    assert_eq!(exposed.status.code(), Some(2), "{}", stdout(&exposed));
    assert!(
        stderr(&exposed).contains("may be read by others"),
        "{}",
        stderr(&exposed)
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;

    let alice = clancy(&data, &["operators", "add", "alice", "--role", "admin"])?;
    assert!(alice.status.success(), "{}", stderr(&alice));
    let token = stdout(&clancy(
        &data,
        &[
            "tokens", "create", "--for", "alice", "--role", "admin", "--as", "alice",
        ],
    )?)
    .lines()
    .last()
    .context("no token")?
    .to_string();

    // On every address: TLS makes it allowed without --insecure-http.
    let served = Served::start(
        &data,
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &cert_arg,
            "--tls-key",
            &key_arg,
        ],
    )?;
    let port = served
        .url
        .rsplit(':')
        .next()
        .context("no port")?
        .to_string();
    assert!(served.url.starts_with("https://"), "{}", served.url);
    let base = format!("https://127.0.0.1:{port}");
    // No admin has enrolled: the start printed alice's link (it replaced
    // the code `operators add` printed: one code at a time).
    let link = served.enrol_link.clone().context("no enrolment link")?;
    assert!(link.starts_with("https://"), "{link}");
    let code = link.split_once('#').context("no code")?.1.to_string();
    let client = trusting(&ca)?;
    assert_eq!(
        client.get(format!("{base}/healthz")).send()?.text()?,
        "ok\n"
    );
    // Clear text to the TLS port gets no answer.
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send();
    assert!(plain.is_err(), "clear text was answered: {plain:?}");
    // A client that does not trust the certificate gets nothing.
    assert!(reqwest::blocking::get(format!("{base}/healthz")).is_err());

    // The session cookie is Secure under TLS, and origins are https.
    let enrolled = client
        .post(format!("{base}/api/v1/enrol"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"code": code, "password": "a sentence nobody guesses"}).to_string(),
        )
        .send()?;
    assert_eq!(enrolled.status(), 200);
    let otpauth: serde_json::Value = serde_json::from_str(&enrolled.text()?)?;
    let totp = totp_rs::Totp::from_url(otpauth["otpauth_uri"].as_str().context("no totp")?)?;
    let signed_in = client
        .post(format!("{base}/api/v1/session"))
        .header("content-type", "application/json")
        .header("origin", &base)
        .body(
            serde_json::json!({
                "user": "alice",
                "password": "a sentence nobody guesses",
                "totp": totp.generate(chrono::Utc::now().timestamp() as u64).to_string(),
            })
            .to_string(),
        )
        .send()?;
    assert_eq!(signed_in.status(), 201);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .context("no cookie")?
        .to_str()?
        .to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let wrong_scheme = client
        .post(format!("{base}/api/v1/session"))
        .header("content-type", "application/json")
        .header("origin", format!("http://127.0.0.1:{port}"))
        .body(r#"{"user": "alice", "password": "x"}"#)
        .send()?;
    assert_eq!(wrong_scheme.status(), 403, "an http origin is another site");

    // The CLI follows the daemon over TLS when told which certificate to trust.
    let listed = clancy_command(&data, &["approvals", "list"])
        .env("CLANCY_TOKEN", &token)
        .env("CLANCY_SERVER", &base)
        .env("CLANCY_CA_CERT", &ca)
        .output()?;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let untrusted = clancy_command(&data, &["approvals", "list"])
        .env("CLANCY_TOKEN", &token)
        .env("CLANCY_SERVER", &base)
        .output()?;
    assert!(
        !untrusted.status.success(),
        "an untrusted certificate was accepted"
    );
    let (status, _) = served.terminate(Duration::from_secs(15))?;
    assert!(status.success());
    Ok(())
}
