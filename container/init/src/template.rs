//! The nginx configuration: the template (`container/nginx.conf.template`, or one mounted in
//! its place) with the settings' values put in, written to [`NGINX_CONF`].

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::access;
use crate::settings::Settings;
use crate::{HEALTH_HOST, NGINX_CONF, NGINX_USER, TEMPLATE};

/// Replaces `${NAME}` for each known name; anything else (nginx's own `${var}`) stays.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

/// The template's values for these settings.
pub fn template_vars(s: &Settings) -> Vec<(&'static str, String)> {
    let user = format!("user {NGINX_USER} {NGINX_USER};");
    let resolver = match &s.resolver {
        Some(r) => format!("resolver {r} valid=30s;"),
        None => "# no resolver: backends must be IP addresses (set RESOLVER for names)".to_string(),
    };
    let no_tls = "# no HTTPS (set TLS_CERT and TLS_KEY)";
    let (tls, https_listen, https_listen_default) = match &s.tls {
        Some(t) => (
            t.http_directives(),
            format!("listen {} ssl;", t.port),
            format!("listen {} ssl default_server;", t.port),
        ),
        None => (no_tls.to_string(), no_tls.to_string(), no_tls.to_string()),
    };
    let api_plain_http = match &s.tls {
        Some(t) if !s.api_plain_http => format!(
            "# HTTPS only: over plain HTTP the API refuses, without proxying to the writer.\n        \
             if ($scheme = http) {{\n            \
             return 403 '{{\"error\": {{\"code\": \"https_required\", \"message\": \
             \"the API answers over HTTPS only (port {port}), so that its token never crosses \
             the network in clear; API_ALLOW_PLAIN_HTTP=1 allows plain HTTP on a private \
             network\"}}}}\\n';\n        }}",
            port = t.port
        ),
        Some(_) => "# API_ALLOW_PLAIN_HTTP=1: the API answers over plain HTTP too".to_string(),
        None => "# no HTTPS: the API answers over plain HTTP".to_string(),
    };
    vec![
        ("DOMAIN", s.domain.clone()),
        ("PORT", s.port.to_string()),
        ("MODE", s.mode.clone()),
        ("WORKER_PROCESSES", s.worker_processes.clone()),
        ("USER", user),
        ("RESOLVER", resolver),
        ("HEALTH_HOST", HEALTH_HOST.to_string()),
        ("TLS", tls),
        ("HTTPS_LISTEN", https_listen),
        ("HTTPS_LISTEN_DEFAULT", https_listen_default),
        ("API_ACCESS", access::directives(&s.api_allow)),
        ("API_PLAIN_HTTP", api_plain_http),
    ]
}

/// Renders the template into [`NGINX_CONF`] (written aside, then renamed into place).
pub fn write_nginx_conf(s: &Settings) -> Result<(), String> {
    let template = std::fs::read_to_string(TEMPLATE).map_err(|e| format!("{TEMPLATE}: {e}"))?;
    let vars = template_vars(s);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let conf = render(&template, &vars);
    let dir = Path::new(NGINX_CONF).parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = format!("{NGINX_CONF}.tmp");
    std::fs::write(&tmp, conf).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, NGINX_CONF).map_err(|e| format!("{NGINX_CONF}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::env;

    /// Every `${NAME}` this program fills in.
    const NAMES: [&str; 12] = [
        "DOMAIN",
        "PORT",
        "MODE",
        "WORKER_PROCESSES",
        "USER",
        "RESOLVER",
        "HEALTH_HOST",
        "TLS",
        "HTTPS_LISTEN",
        "HTTPS_LISTEN_DEFAULT",
        "API_ACCESS",
        "API_PLAIN_HTTP",
    ];

    #[test]
    fn render_replaces_known_names_only() {
        let s =
            Settings::from_env(&env(&[("DOMAIN", "example.test"), ("PORT", "81")]), "").unwrap();
        let vars = template_vars(&s);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = render(
            "${USER}\nlisten ${PORT};\nserver_name api.${DOMAIN};\nreturn 200 \"${host}\";\n",
            &vars,
        );
        assert_eq!(
            out,
            "user nginx nginx;\nlisten 81;\nserver_name api.example.test;\n\
             return 200 \"${host}\";\n"
        );
    }

    const TEMPLATE_SOURCE: &str = include_str!("../../nginx.conf.template");

    fn rendered(pairs: &[(&str, &str)]) -> String {
        let s = Settings::from_env(&env(pairs), "").unwrap();
        let vars = template_vars(&s);
        let names: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, NAMES);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let conf = render(TEMPLATE_SOURCE, &vars);
        // Without the comments: what nginx reads.
        conf.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn without_tls_nothing_listens_on_https() {
        let c = rendered(&[("DOMAIN", "example.test")]);
        assert!(!c.contains(" ssl"), "{c}");
        assert!(!c.contains("http2"));
        assert!(!c.contains("https_required"));
        assert!(!c.contains("allow 127.0.0.1/32"));
        assert_eq!(c.matches("listen 80").count(), 3);
    }

    #[test]
    fn with_tls_the_api_and_the_sites_listen_on_https() {
        let tls = [
            ("DOMAIN", "example.test"),
            ("TLS_CERT", "/tls/cert.pem"),
            ("TLS_KEY", "/tls/key.pem"),
            ("HTTPS_PORT", "8443"),
        ];
        let c = rendered(&tls);
        assert!(c.contains("ssl_certificate /tls/cert.pem;"));
        assert!(c.contains("ssl_certificate_key /tls/key.pem;"));
        assert!(c.contains("ssl_protocols TLSv1.2 TLSv1.3;"));
        assert!(c.contains("http2 on;"));
        assert_eq!(c.matches("listen 8443 ssl;").count(), 1, "the API");
        assert_eq!(c.matches("listen 8443 ssl default_server;").count(), 1);
        assert!(c.contains("if ($scheme = http)") && c.contains("https_required"));
        let c = rendered(&[tls.as_slice(), &[("API_ALLOW_PLAIN_HTTP", "1")]].concat());
        assert!(!c.contains("https_required"));
        let c = rendered(&[("DOMAIN", "example.test"), ("API_ALLOW", "127.0.0.1/32")]);
        assert!(c.contains("allow 127.0.0.1/32;\n        deny all;"));
        assert!(!c.contains(" ssl"));
    }

    #[test]
    fn the_shipped_template_uses_only_known_names() {
        let t = TEMPLATE_SOURCE;
        let known = NAMES;
        for (i, _) in t.match_indices("${") {
            let name: String = t[i + 2..].chars().take_while(|c| *c != '}').collect();
            if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                assert!(
                    known.contains(&name.as_str()),
                    "unknown ${{{name}}} in the template"
                );
            }
        }
        for k in known {
            assert!(
                t.contains(&format!("${{{k}}}")),
                "the template does not use ${{{k}}}"
            );
        }
    }
}
