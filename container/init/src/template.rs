//! The nginx configuration: the template (`container/nginx.conf.template`, or one mounted in
//! its place) with the settings' values put in, written to [`NGINX_CONF`].

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

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
    vec![
        ("DOMAIN", s.domain.clone()),
        ("PORT", s.port.to_string()),
        ("MODE", s.mode.clone()),
        ("WORKER_PROCESSES", s.worker_processes.clone()),
        ("USER", user),
        ("RESOLVER", resolver),
        ("HEALTH_HOST", HEALTH_HOST.to_string()),
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

    #[test]
    fn the_shipped_template_uses_only_known_names() {
        let t = include_str!("../../nginx.conf.template");
        let known = [
            "DOMAIN",
            "PORT",
            "MODE",
            "WORKER_PROCESSES",
            "USER",
            "RESOLVER",
            "HEALTH_HOST",
        ];
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
