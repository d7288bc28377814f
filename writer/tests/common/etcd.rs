//! A real etcd for the writer's fleet tests: one member (`/usr/bin/etcd`, Debian's
//! `etcd-server`) on loopback ports chosen by the test, its data in a temporary directory.
//! Stopped (SIGKILL, then waited for) when dropped; `kill` and `start` again on the same
//! ports and data for the outage tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub struct Etcd {
    pub dir: PathBuf,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// Two consecutive ports free at the time of asking, below the ephemeral range: a port the
/// kernel hands out could be taken by any outgoing connection before etcd binds it, or while
/// the member is killed.
fn free_ports() -> (u16, u16) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id() ^ nanos;
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    let base = (0..2000u32)
        .map(|i| 20000 + (seed.wrapping_add(i * 7919) % 12000) as u16)
        .find(|&p| free(p) && free(p + 1))
        .expect("two free ports");
    (base, base + 1)
}

impl Etcd {
    /// Starts a member with its data under `dir` and waits until it answers.
    pub async fn start(dir: &Path) -> Etcd {
        let (client_port, peer_port) = free_ports();
        let mut e = Etcd {
            dir: dir.join("etcd"),
            client_port,
            peer_port,
            child: None,
        };
        e.restart().await;
        e
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts it again (after [`Etcd::kill`]) on the same ports and data.
    pub async fn restart(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "m1", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m1={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian: apt-get install etcd-server)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(mut c) = self.client().await {
                if c.get("health-probe", None).await.is_ok() {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2));
        etcd_client::Client::connect([self.url()], Some(opts)).await
    }

    /// Every key and value under `prefix`.
    pub async fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let mut c = self.client().await.unwrap();
        let r = c
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
