//! Where the API listens: a unix socket (the default; nginx proxies `api.$DOMAIN` to it) and
//! optionally a TCP port on loopback.
//!
//! The socket gets mode 0660 and, if asked, a group (nginx's), so nginx can connect and
//! nobody else can. A stale socket file left by a killed daemon is replaced; a live one (a
//! daemon still answering on it) is an error.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};

/// A bound listener for [`run`](crate::run).
pub enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Unix(u) => match u
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Some(p) => write!(f, "unix:{}", p.display()),
                None => f.write_str("unix:(unnamed)"),
            },
            Listener::Tcp(t) => match t.local_addr() {
                Ok(a) => write!(f, "tcp:{a}"),
                Err(_) => f.write_str("tcp:(unknown)"),
            },
        }
    }
}

/// Binds the unix socket at `path`: parent directories created (0755), a stale socket file
/// replaced, then `mode` and `group` applied. Call from inside a tokio runtime.
pub fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> io::Result<Listener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    match fs::symlink_metadata(path) {
        Ok(_) => {
            if StdUnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{}: another daemon is listening on this socket",
                        path.display()
                    ),
                ));
            }
            fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = StdUnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if let Some(g) = group {
        chgrp(path, g)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    l.set_nonblocking(true)?;
    Ok(Listener::Unix(tokio::net::UnixListener::from_std(l)?))
}

/// Binds TCP at `addr`; refuses a non-loopback address unless `allow_remote`.
pub fn bind_tcp(addr: SocketAddr, allow_remote: bool) -> io::Result<Listener> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{addr} is not a loopback address; the API is meant for nginx on this host \
                 (pass --allow-remote to listen there anyway)"
            ),
        ));
    }
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(Listener::Tcp(tokio::net::TcpListener::from_std(l)?))
}

/// Gives `path` to group `name` (a name or a numeric gid).
fn chgrp(path: &Path, name: &str) -> io::Result<()> {
    let gid = match name.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => gid_of(name)?,
    };
    std::os::unix::fs::chown(path, None, Some(gid))
}

fn gid_of(name: &str) -> io::Result<u32> {
    let cname = CString::new(name).map_err(|_| io::Error::other("group name contains NUL"))?;
    // SAFETY: `libc::group` is plain data (integers and pointers); all-zero is a valid value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `grp` and
    // `result` are live locals, `buf` is a live buffer of the length passed.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group named {name:?}"),
        ));
    }
    Ok(grp.gr_gid)
}

/// The default socket path.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/set-backend/api.sock")
}
