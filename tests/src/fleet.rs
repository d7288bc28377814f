//! [`Node`]: one node of a fleet — the writer in fleet mode (`--etcd`) and nginx in front of
//! it — and the check that every node's table and store hold exactly what etcd holds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{assert_table_matches_store, listed, with_api, Etcd, Nginx, Writer, TOKEN, WAIT};

/// The fleet's key prefix in etcd (the writer's default, `docs/FLEET.md`).
pub const FLEET_PREFIX: &str = "/set-backend/v1/";

/// A node: its writer follows `etcd`, its nginx routes by its table and proxies
/// `api.test.example` to the writer ([`with_api`]).
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub writer: Writer,
    pub nginx: Nginx,
    args: Vec<String>,
}

impl Node {
    /// Starts the writer on `dir` following `etcd` as `name`, then nginx in front of it.
    pub fn start(etcd: &Etcd, dir: &Path, name: &str) -> Node {
        let args = Node::fleet_args(&etcd.endpoints(), name);
        let writer = start_writer(dir, &args);
        let nginx = Nginx::start(with_api(&writer.table(), &writer.socket));
        Node {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            writer,
            nginx,
            args,
        }
    }

    /// The writer's fleet options: `endpoints`, this node's name, short timeouts (the fault
    /// tests wait for them).
    pub fn fleet_args(endpoints: &str, name: &str) -> Vec<String> {
        [
            "--etcd",
            endpoints,
            "--node-name",
            name,
            "--etcd-dial-timeout",
            "1s",
            "--etcd-request-timeout",
            "3s",
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// SIGKILLs the writer (nginx keeps its table mapped).
    pub fn kill_writer(&mut self) {
        self.writer.kill();
    }

    /// Stops the writer gracefully.
    pub fn stop_writer(&mut self) {
        self.writer.stop();
    }

    /// Starts the writer again on its data (after [`Node::kill_writer`] or
    /// [`Node::stop_writer`]).
    pub fn restart_writer(&mut self) {
        self.writer = start_writer(&self.dir, &self.args);
    }

    /// The node's entries, as its API exports them (`GET /entries.json`), sorted by host.
    pub fn export(&self) -> Vec<(String, String)> {
        let mut e = listed(&self.writer.socket);
        e.sort();
        e
    }
}

fn start_writer(dir: &Path, args: &[String]) -> Writer {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Writer::start_with_args(dir, TOKEN, &args)
}

/// etcd's entries: every host of the current generation (`data/generation`, absent: `0`) and
/// its backend, sorted by host.
pub fn etcd_entries(etcd: &Etcd) -> Vec<(String, String)> {
    let generation = etcd
        .get(&format!("{FLEET_PREFIX}data/generation"))
        .unwrap_or_else(|| "0".into());
    let hosts = format!("{FLEET_PREFIX}data/g/{generation}/");
    let mut entries: Vec<(String, String)> = etcd
        .prefix(&hosts)
        .into_iter()
        .map(|(key, backend)| {
            // <hosts><bb>/<host>
            let host = key[hosts.len()..]
                .split_once('/')
                .map(|(_, h)| h.to_string())
                .unwrap_or_else(|| panic!("a host key without a bucket: {key}"));
            (host, backend)
        })
        .collect();
    entries.sort();
    entries
}

/// Waits until every node's store holds exactly etcd's entries (bounded by [`WAIT`]), and
/// checks that each node's table holds exactly its store. Returns etcd's entries.
pub fn assert_converged(etcd: &Etcd, nodes: &[&Node], when: &str) -> Vec<(String, String)> {
    let want = etcd_entries(etcd);
    for n in nodes {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = n.export();
            if got == want {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<_> = want.iter().filter(|e| !got.contains(e)).take(10).collect();
                let extra: Vec<_> = got.iter().filter(|e| !want.contains(e)).take(10).collect();
                panic!(
                    "{when}: {} differs from etcd ({} entries there, {} here); \
                     missing {missing:?}, extra {extra:?}",
                    n.name,
                    want.len(),
                    got.len()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_table_matches_store(&n.writer, &format!("{when}: {}", n.name));
    }
    want
}
