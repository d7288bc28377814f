//! Who may reach the API: `API_ALLOW`, a list of addresses and CIDR blocks, becomes nginx's
//! `allow …; deny all;` in the `api.$DOMAIN` server; everyone else gets 403 from nginx, before
//! the writer sees the request. Unset (the default), the API is open to every address: its
//! writes need the token either way, and a container cannot guess the operator's networks.

use std::net::IpAddr;

/// `API_ALLOW` parsed: each entry an address (`10.0.0.7`, `fd00::1`) or a block
/// (`10.0.0.0/8`, `fd00::/64`), separated by commas or spaces. Empty: open to all.
pub fn parse_allow(list: &str) -> Result<Vec<String>, String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(|e| {
            parse_entry(e).ok_or_else(|| {
                format!(
                    "API_ALLOW: {e:?} is not an address or CIDR block \
                     (expected e.g. \"10.0.0.0/8, 192.0.2.7, fd00::/64\")"
                )
            })
        })
        .collect()
}

fn parse_entry(e: &str) -> Option<String> {
    let (addr, prefix) = match e.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (e, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => Some(ip.to_string()),
        Some(p) => {
            // Digits only: "+8" or " 8" parse as u8 but are not nginx's syntax.
            let bits: u8 = p
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse().ok())??;
            (bits <= max).then(|| format!("{ip}/{bits}"))
        }
    }
}

/// The `api.$DOMAIN` server's access rules for `allow` (the parsed list).
pub fn directives(allow: &[String]) -> String {
    if allow.is_empty() {
        return "# open to every address (set API_ALLOW to close it)".to_string();
    }
    let mut out = String::from("# API_ALLOW: these addresses only; everyone else gets 403.\n");
    for a in allow {
        out.push_str(&format!("        allow {a};\n"));
    }
    out.push_str("        deny all;");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_blocks() {
        assert_eq!(parse_allow(""), Ok(vec![]));
        assert_eq!(
            parse_allow(" 10.0.0.0/8, 192.0.2.7 fd00::/64,,127.0.0.1/32 ").unwrap(),
            ["10.0.0.0/8", "192.0.2.7", "fd00::/64", "127.0.0.1/32"]
        );
        assert_eq!(parse_allow("FD00:0::1").unwrap(), ["fd00::1"]);
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "example.com",
            "all",
            "10.0.0.1;deny",
            "unix:",
        ] {
            let e = parse_allow(bad).unwrap_err();
            assert!(e.contains("API_ALLOW"), "{bad}: {e}");
        }
    }

    #[test]
    fn rules() {
        assert!(directives(&[]).starts_with('#'));
        let d = directives(&["10.0.0.0/8".into(), "fd00::1".into()]);
        assert!(d.contains("allow 10.0.0.0/8;\n        allow fd00::1;\n        deny all;"));
    }
}
