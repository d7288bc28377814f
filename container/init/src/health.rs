//! Probes: is the writer serving on its socket (at start), and the HEALTHCHECK (nginx serves
//! the API and its workers have the table mapped).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::settings::settings;
use crate::{HEALTH_HOST, SOCKET};

/// Whether the writer answers `GET /healthz` on its socket (any status: 503 only means the
/// table is out of sync with the store, which nginx should not wait for).
pub fn writer_serves() -> bool {
    let attempt = || -> io::Result<bool> {
        let mut s = UnixStream::connect(SOCKET)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.set_write_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1."))
    };
    attempt().unwrap_or(false)
}

/// One HTTP/1.0 request to nginx on loopback: the status and the body.
fn http_get(port: u16, host: &str, path: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: set-backend-init health\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.trim().to_string()))
}

/// The HEALTHCHECK: nginx answers `/healthz` with the writer's 200, and a lookup in nginx
/// finds the table mapped (`hit` or `miss`, not `unavailable`). Both through the health server
/// of the template (loopback only), so that neither `API_ALLOW` nor HTTPS-only changes it.
pub fn health() -> Result<u8, String> {
    let s = settings()?;
    match http_get(s.port, HEALTH_HOST, "/healthz") {
        Ok((200, _)) => {}
        Ok((code, body)) => {
            return Err(format!(
                "unhealthy: the writer's /healthz through nginx answered {code}: {body}"
            ))
        }
        Err(e) => return Err(format!("unhealthy: nginx on port {}: {e}", s.port)),
    }
    match http_get(s.port, HEALTH_HOST, "/") {
        Ok((200, body)) if body == "hit" || body == "miss" => {
            println!("healthy: the API answers and nginx has the table mapped");
            Ok(0)
        }
        Ok((code, body)) => Err(format!(
            "unhealthy: the nginx workers cannot use the table ({code}: {body})"
        )),
        Err(e) => Err(format!("unhealthy: nginx on port {}: {e}", s.port)),
    }
}
