//! TLS backends for upstream mode's `https://` tests: a self-signed certificate made with
//! `openssl`, and the `server {}` block of a TLS backend that reports what it saw.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed certificate and its key (readable by nginx's workers) in `dir`, for `cn`;
/// `None` when `openssl` cannot make one here (the caller skips its test).
pub fn self_signed(dir: &Path, cn: &str) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        return None;
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).ok()?;
    Some((cert, key))
}

/// An nginx `server {}` listening with TLS on `port` that answers every request with `body`
/// (nginx variables allowed, e.g. `sni=$ssl_server_name`), and logs `$connection
/// $connection_requests` to `log`: a line ending in ` 1` is a new TLS connection.
pub fn tls_backend(port: u16, (cert, key): &(PathBuf, PathBuf), body: &str, log: &Path) -> String {
    format!(
        "log_format tls_backend '$connection $connection_requests';
         server {{
             listen 127.0.0.1:{port} ssl;
             ssl_certificate {cert};
             ssl_certificate_key {key};
             access_log {log} tls_backend;
             location / {{ return 200 '{body}'; }}
         }}",
        cert = cert.display(),
        key = key.display(),
        log = log.display(),
    )
}

/// New connections in a log written by [`tls_backend`].
pub fn tls_connections(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(" 1"))
        .count()
}
