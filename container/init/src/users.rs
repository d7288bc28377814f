//! The users the children run as, and the ownership of the directories they share: the
//! volume (the writer's; the nginx workers may read it) and the API socket's directory (the
//! writer's, with nginx's group).

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::{log, SOCKET_DIR, WRITER_USER};

/// A user of /etc/passwd (the image has no NSS modules to ask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

pub fn lookup_user(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then_some(())?;
        Some(User {
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

pub fn user(name: &str) -> Result<User, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    lookup_user(&passwd, name).ok_or_else(|| format!("no user {name:?} in /etc/passwd"))
}

/// Makes `dir` and everything in it belong to `owner` (a volume made by another image, a
/// restored backup), and `dir` itself searchable by the nginx workers.
pub fn own_data_dir(dir: &Path, owner: User) -> io::Result<()> {
    fn walk(p: &Path, owner: User, fixed: &mut usize) -> io::Result<()> {
        let m = std::fs::symlink_metadata(p)?;
        if m.uid() != owner.uid || m.gid() != owner.gid {
            std::os::unix::fs::lchown(p, Some(owner.uid), Some(owner.gid))?;
            *fixed += 1;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), owner, fixed)?;
            }
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut fixed = 0;
    walk(dir, owner, &mut fixed)?;
    if fixed > 0 {
        log(&format!(
            "gave {fixed} file(s) of {} to the {WRITER_USER} user",
            dir.display()
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// The socket directory: the writer's, nginx's group, 2750.
pub fn own_socket_dir(writer: User, nginx_gid: u32) -> io::Result<()> {
    let dir = Path::new(SOCKET_DIR);
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(writer.uid), Some(nginx_gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2750))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let p =
            "root:x:0:0:root:/root:/sbin/nologin\nnginx:x:101:101::/nonexistent:/sbin/nologin\n";
        assert_eq!(lookup_user(p, "nginx"), Some(User { uid: 101, gid: 101 }));
        assert_eq!(lookup_user(p, "ngin"), None);
        assert_eq!(lookup_user("broken\n", "broken"), None);
    }
}
