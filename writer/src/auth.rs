//! The API token: where it comes from, and how a presented one is compared. No HTTP here:
//! the middleware that applies [`bearer_matches`] to every `/entries` request is in `api`.
//!
//! No token ships with the daemon. It comes from `API_TOKEN`, else from the token file; if
//! neither exists, a random one is generated and written to the token file with mode 0600
//! (the daemon prints where). A token given from outside must resist guessing: at least
//! [`MIN_TOKEN_LEN`] characters with at least [`MIN_DISTINCT`] different ones (a generated
//! one is 64 hex digits, 256 bits). Requests present it as `Authorization: Bearer <token>`;
//! the comparison takes the same time wherever the first difference is.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use subtle::ConstantTimeEq;

/// The shortest token accepted from the environment or a file: 32 characters are 128 bits
/// of hex digits, beyond guessing even at line rate.
pub const MIN_TOKEN_LEN: usize = 32;
/// The fewest different characters in a token: refuses the long but guessable (`aaaa…`,
/// `12121212…`, a short word repeated).
pub const MIN_DISTINCT: usize = 10;

/// Where the token in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env,
    File,
    /// Generated now and written to the token file.
    Generated,
}

/// The token from `env` (the value of `API_TOKEN`), else from `path`, else a new one written
/// to `path` (mode 0600, parent directories created). Every token taken from outside passes
/// [`check`].
pub fn resolve_token(env: Option<String>, path: &Path) -> io::Result<(String, TokenSource)> {
    if let Some(t) = env {
        return check(t.trim().to_string(), "API_TOKEN").map(|t| (t, TokenSource::Env));
    }
    match fs::read_to_string(path) {
        Ok(t) => {
            let what = path.display().to_string();
            check(t.trim().to_string(), &what).map(|t| (t, TokenSource::File))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_new_token(path).map(|t| (t, TokenSource::Generated))
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Generates a token and writes it to `path` (mode 0600, never over an existing file).
fn write_new_token(path: &Path) -> io::Result<String> {
    let token = generate()?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// Refuses a token an attacker could guess or a header could not carry, saying what it needs
/// (and never printing the token).
fn check(token: String, what: &str) -> io::Result<String> {
    let len = token.chars().count();
    let distinct = token
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let invalid = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the token in {what} {why}: it needs at least {MIN_TOKEN_LEN} characters, at \
                 least {MIN_DISTINCT} of them different, and no whitespace \
                 (e.g. `openssl rand -hex 32`)"
            ),
        ))
    };
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("holds whitespace or control characters".into());
    }
    if len < MIN_TOKEN_LEN || distinct < MIN_DISTINCT {
        return invalid(format!(
            "is too weak to resist guessing ({len} characters, {distinct} different)"
        ));
    }
    Ok(token)
}

/// 32 random bytes from the kernel, as 64 hex digits.
fn generate() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// True if `header` is `Bearer <token>` with the right token.
pub fn bearer_matches(header: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(h) = header else { return false };
    if h.len() < 7 || !h[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let presented = h[7..].trim_ascii();
    // Length is not secret (every generated token has the same); the bytes are.
    presented.len() == token.len() && bool::from(presented.ct_eq(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_checked_exactly() {
        let t = b"0123456789abcdef0123";
        assert!(bearer_matches(Some(b"Bearer 0123456789abcdef0123"), t));
        assert!(bearer_matches(Some(b"bearer 0123456789abcdef0123"), t));
        assert!(!bearer_matches(None, t));
        assert!(!bearer_matches(Some(b"Bearer 0123456789abcdef012"), t));
        assert!(!bearer_matches(Some(b"Bearer 0123456789abcdef01234"), t));
        assert!(!bearer_matches(Some(b"Basic 0123456789abcdef0123"), t));
        assert!(!bearer_matches(Some(b"0123456789abcdef0123"), t));
        assert!(!bearer_matches(Some(b"Bearer "), t));
    }

    #[test]
    fn a_generated_token_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/token");
        let (t1, s1) = resolve_token(None, &path).unwrap();
        assert_eq!(s1, TokenSource::Generated);
        assert_eq!(t1.len(), 64);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (t2, s2) = resolve_token(None, &path).unwrap();
        assert_eq!((t2.as_str(), s2), (t1.as_str(), TokenSource::File));
        let env = "from-the-environment-0123456789abcdef";
        let (t3, s3) = resolve_token(Some(env.into()), &path).unwrap();
        assert_eq!((t3.as_str(), s3), (env, TokenSource::Env));
        assert!(resolve_token(Some("short".into()), &path).is_err());
    }

    #[test]
    fn a_weak_token_is_refused_with_what_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let strong = "0123456789abcdef0123456789abcdef";
        assert!(resolve_token(Some(strong.into()), &path).is_ok());
        for (weak, why) in [
            (
                "0123456789abcdef0123456789abcde",
                "31 characters, 16 different",
            ),
            (&"a".repeat(64), "64 characters, 1 different"),
            (&"ab12".repeat(10), "40 characters, 4 different"),
            ("0123456789abcdef 0123456789abcdef", "whitespace"),
        ] {
            let e = resolve_token(Some(weak.to_string()), &path)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{weak}: {e}");
            assert!(
                e.contains("at least 32 characters, at least 10 of them different"),
                "{e}"
            );
            assert!(!e.contains(weak.trim()), "the error shows the token: {e}");
        }
        // A weak token in the token file is refused the same way.
        fs::write(&path, "a".repeat(40)).unwrap();
        let e = resolve_token(None, &path).unwrap_err().to_string();
        assert!(e.contains("too weak") && e.contains("token"), "{e}");
    }
}
