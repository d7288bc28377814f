//! HTTPS: the certificate and key (`TLS_CERT`, `TLS_KEY`), the port (`HTTPS_PORT`), and the
//! TLS policy nginx gets for them.
//!
//! The policy is Mozilla's "intermediate" configuration (ssl-config.mozilla.org, guidelines
//! 5.7 and later): TLS 1.2 and 1.3, its ECDHE cipher list for TLS 1.2 (TLS 1.3's suites are all
//! acceptable and left to OpenSSL), the server not imposing its order, a shared session cache
//! for resumption across workers, no session tickets (nginx never rotates their key without a
//! restart). OCSP stapling is turned on only when the certificate file holds the chain (the
//! leaf and at least one issuer): stapling needs the issuer's certificate; nginx then staples
//! when the leaf names an OCSP responder and says once in its log when it does not.

/// The HTTPS side of the settings, present when `TLS_CERT` and `TLS_KEY` are both set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The certificate file (PEM): the server's certificate, then its chain if any.
    pub cert: String,
    /// The private key file (PEM).
    pub key: String,
    /// The port of the HTTPS listeners (all addresses).
    pub port: u16,
    /// Whether `cert` holds more than one certificate (the chain): decides OCSP stapling.
    /// Known once the file was read ([`Tls::inspect`]).
    pub chain: bool,
}

impl Tls {
    /// `TLS_CERT`, `TLS_KEY` and `HTTPS_PORT` (`get` returns a trimmed, non-empty value);
    /// `port` is the plain-HTTP port, which `HTTPS_PORT` must differ from.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        port: u16,
    ) -> Result<Option<Tls>, String> {
        let (cert, key) = match (get("TLS_CERT"), get("TLS_KEY")) {
            (None, None) => {
                if let Some(p) = get("HTTPS_PORT") {
                    return Err(format!(
                        "HTTPS_PORT={p:?} without TLS_CERT and TLS_KEY: HTTPS needs a \
                         certificate and its key (files in a mounted volume or secret)"
                    ));
                }
                return Ok(None);
            }
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => return Err("TLS_CERT is set but TLS_KEY is not".into()),
            (None, Some(_)) => return Err("TLS_KEY is set but TLS_CERT is not".into()),
        };
        let cert = safe_path("TLS_CERT", &cert)?;
        let key = safe_path("TLS_KEY", &key)?;
        let https_port = match get("HTTPS_PORT") {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("HTTPS_PORT={p:?} is not a port number"))?,
        };
        if https_port == port {
            return Err(format!(
                "HTTPS_PORT and PORT are both {port}: plain HTTP and HTTPS need a port each"
            ));
        }
        Ok(Some(Tls {
            cert,
            key,
            port: https_port,
            chain: false,
        }))
    }

    /// Reads both files (as root, before nginx does) so that a missing file or one of the wrong
    /// kind is a clear error at start; notes whether the certificate file holds a chain.
    pub fn inspect(&mut self) -> Result<(), String> {
        let read = |what: &str, path: &str| {
            std::fs::read_to_string(path).map_err(|e| format!("{what}={path}: {e}"))
        };
        let cert = read("TLS_CERT", &self.cert)?;
        let certs = cert.matches("-----BEGIN CERTIFICATE-----").count();
        if certs == 0 {
            return Err(format!(
                "TLS_CERT={}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                self.cert
            ));
        }
        let key = read("TLS_KEY", &self.key)?;
        if !(key.contains("-----BEGIN ") && key.contains("PRIVATE KEY-----")) {
            return Err(format!(
                "TLS_KEY={}: no PEM private key (-----BEGIN … PRIVATE KEY-----) in it",
                self.key
            ));
        }
        self.chain = certs > 1;
        Ok(())
    }

    /// The http-level directives: certificate, policy, session cache, HTTP/2, stapling.
    pub fn http_directives(&self) -> String {
        let stapling = if self.chain {
            "ssl_stapling on;"
        } else {
            "# no OCSP stapling: TLS_CERT holds no chain (stapling needs the issuer's certificate)"
        };
        format!(
            "ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    \
             # Mozilla \"intermediate\": TLS 1.2 and 1.3, ECDHE with AES-GCM or ChaCha20-Poly1305.\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    \
             ssl_ecdh_curve X25519:prime256v1:secp384r1;\n    \
             ssl_ciphers {ciphers};\n    \
             ssl_prefer_server_ciphers off;\n    \
             ssl_session_cache shared:TLS:10m;\n    \
             ssl_session_timeout 1d;\n    \
             ssl_session_tickets off;\n    \
             {stapling}\n    \
             http2 on;",
            cert = self.cert,
            key = self.key,
            ciphers = INTERMEDIATE_CIPHERS,
        )
    }
}

/// Mozilla's "intermediate" TLS 1.2 cipher list (TLS 1.3 suites are not set by this list).
pub const INTERMEDIATE_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-CHACHA20-POLY1305";

/// A file path that can go into nginx.conf as it is: absolute, without whitespace, quotes,
/// `;`, braces, `#`, `$` or control characters.
fn safe_path(name: &str, path: &str) -> Result<String, String> {
    let bad = |c: char| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, ';' | '{' | '}' | '#' | '$' | '"' | '\'' | '\\')
    };
    if !path.starts_with('/') || path.chars().any(bad) {
        return Err(format!(
            "{name}={path:?}: expected an absolute file path without spaces, quotes or any of \
             ; {{ }} # $ \\"
        ));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tls(pairs: &[(&str, &str)], port: u16) -> Result<Option<Tls>, String> {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        Tls::from_env(|k| env.get(k).map(|v| v.to_string()), port)
    }

    #[test]
    fn both_files_or_neither() {
        assert_eq!(tls(&[], 80), Ok(None));
        let t = tls(&[("TLS_CERT", "/tls/c.pem"), ("TLS_KEY", "/tls/k.pem")], 80)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.cert.as_str(), t.key.as_str(), t.port),
            ("/tls/c.pem", "/tls/k.pem", 443)
        );
        let t = tls(
            &[
                ("TLS_CERT", "/c"),
                ("TLS_KEY", "/k"),
                ("HTTPS_PORT", "8443"),
            ],
            8080,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.port, 8443);
        for bad in [
            vec![("TLS_CERT", "/c")],
            vec![("TLS_KEY", "/k")],
            vec![("HTTPS_PORT", "443")],
            vec![("TLS_CERT", "/c"), ("TLS_KEY", "/k"), ("HTTPS_PORT", "80")],
            vec![("TLS_CERT", "/c"), ("TLS_KEY", "/k"), ("HTTPS_PORT", "0")],
            vec![("TLS_CERT", "/c;"), ("TLS_KEY", "/k")],
            vec![("TLS_CERT", "/c"), ("TLS_KEY", "k")],
            vec![("TLS_CERT", "/c d"), ("TLS_KEY", "/k")],
        ] {
            assert!(tls(&bad, 80).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inspect_reads_the_files_and_finds_the_chain() {
        let dir = std::env::temp_dir().join(format!("sb-init-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n).display().to_string();
        let cert = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        std::fs::write(p("leaf.pem"), cert).unwrap();
        std::fs::write(p("chain.pem"), format!("{cert}{cert}")).unwrap();
        std::fs::write(p("key.pem"), "-----BEGIN PRIVATE KEY-----\nAA==\n").unwrap();
        let mut t = Tls {
            cert: p("leaf.pem"),
            key: p("key.pem"),
            port: 443,
            chain: true,
        };
        t.inspect().unwrap();
        assert!(!t.chain);
        assert!(!t.http_directives().contains("ssl_stapling on"));
        t.cert = p("chain.pem");
        t.inspect().unwrap();
        assert!(t.chain);
        assert!(t.http_directives().contains("ssl_stapling on;"));
        t.key = p("leaf.pem");
        assert!(t.inspect().unwrap_err().contains("no PEM private key"));
        t.key = p("missing.pem");
        assert!(t.inspect().unwrap_err().contains("missing.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
