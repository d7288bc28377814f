//! Resource faults (`RELIABILITY.md`): a full disk under the store and the table, or under the
//! table alone (tmpfs); a read-only store; the table file deleted or replaced under nginx.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use set_backend_tests::*;
use shm_layout::Lookup;

use super::skip_unless_root;

/// A tmpfs mounted for a test, unmounted on drop (lazily if something still holds it).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        fs::create_dir_all(dir).expect("mkdir mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Mount(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the file system holding `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).expect("create filler");
    let chunk = vec![0x42u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let small = [0x42u8; 512];
    while f.write_all(&small).is_ok() {}
    path
}

#[test]
fn a_full_disk_refuses_writes_with_503_loses_nothing_and_recovers() {
    if skip_unless_root("a_full_disk_refuses_writes_with_503_loses_nothing_and_recovers") {
        return;
    }
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let disk = Mount::tmpfs(&data.path().join("disk"), "6m");
    let dir = disk.0.join("writer");
    let (mut w, n) = writer_behind_nginx(&dir);
    let r = post_entry(&w.socket, "before.example", &a.addr());
    assert!(r.status < 300, "{r:?}");
    n.wait_every_worker("before.example", body_is(&a));

    let filler = fill(&disk.0);
    let load = Load::start(n.port, &["before.example".to_string()], "a", 2);
    // Batches of new hosts until the store refuses: each answer is a 2xx or the 503.
    let mut acked = Acked::default();
    acked.record(vec![("before.example".to_string(), Some(a.addr()))]);
    let mut refused = 0;
    let mut attempts = 0;
    let mut message = String::new();
    for batch in 0..200 {
        attempts += 1;
        let hosts: Vec<String> = (0..200)
            .map(|i| format!("full-{batch}-{i}.example"))
            .collect();
        let r = upsert_all(&w.socket, &hosts, &a.addr());
        match r.status {
            200 => acked.record(hosts.into_iter().map(|h| (h, Some(a.addr()))).collect()),
            503 => {
                assert_eq!(error_code(&r), "store_unavailable", "{r:?}");
                message = r.body.clone();
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            _ => panic!("batch {batch}: {r:?}\n{}", w.log()),
        }
    }
    assert!(refused > 0, "the full disk never refused a write");
    assert!(message.contains("full"), "the message says why: {message}");
    // Single writes are refused as well, and reads still answer.
    let r = socket_api(&w.socket, "GET", "/entries/before.example.json", None);
    assert!(r.status == 200 || r.status == 503, "{r:?}");

    // Room again: writes succeed after the store is reopened (within a heartbeat or at once).
    fs::remove_file(&filler).expect("remove filler");
    let mut recovered = None;
    let deadline = Instant::now() + WAIT;
    while recovered.is_none() && Instant::now() < deadline {
        let r = post_entry(&w.socket, "after.example", &a.addr());
        if r.status < 300 {
            recovered = Some(r);
        } else {
            assert_eq!(r.status, 503, "{r:?}");
            thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(recovered.is_some(), "writes never recovered\n{}", w.log());
    acked.record(vec![("after.example".to_string(), Some(a.addr()))]);
    n.wait_every_worker("after.example", body_is(&a));
    let (ok, failed) = load.finish();

    let mut check = |w: &Writer, when: &str| {
        let store = assert_table_matches_store(w, when);
        acked.check(&store, when);
    };
    check(&w, "after recovery");
    w.stop();
    let w = Writer::start(&dir, TOKEN);
    check(&w, "after a restart");
    eprintln!(
        "RELIABILITY disk_full batches={attempts} acked_batches={} refused={refused} routed_requests={} failed={failed} lost=0",
        acked.acks() - 2,
        ok + failed
    );
    assert_eq!(failed, 0, "routing failed while the disk was full");
    drop(w);
    drop(n);
}

#[test]
fn a_full_table_disk_answers_503_until_the_table_is_rebuilt() {
    if skip_unless_root("a_full_table_disk_answers_503_until_the_table_is_rebuilt") {
        return;
    }
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    // The store on the usual disk, the table alone on a small tmpfs: commits succeed, a new
    // generation of the table cannot be allocated.
    let disk = Mount::tmpfs(&data.path().join("tables"), "1m");
    let table = disk.0.join("table");
    let dir = data.path().join("writer");
    let table_arg = table.to_string_lossy().into_owned();
    let w = Writer::start_with_args(&dir, TOKEN, &["--table", &table_arg]);
    let n = Nginx::start(with_api(&table, &w.socket));
    let post = |host: &str| post_entry(&w.socket, host, &a.addr());
    assert!(post("steady.example").status < 300);
    n.wait_every_worker("steady.example", body_is(&a));
    let filler = fill(&disk.0);
    let load = Load::start(n.port, &["steady.example".to_string()], "a", 2);

    // Batches until the table must grow: every 2xx is visible in the table at once; the batch
    // that cannot be published is stored and answered 503 table_unavailable.
    let (mut visible, mut unavailable, mut message) = (0, 0, String::new());
    for batch in 0..100 {
        let hosts: Vec<String> = (0..300)
            .map(|i| format!("grow-{batch}-{i}.example"))
            .collect();
        let r = upsert_all(&w.socket, &hosts, &a.addr());
        match r.status {
            200 => {
                let t = Table::open(&table).expect("table");
                for h in &hosts {
                    assert!(
                        matches!(t.lookup(h.as_bytes()), Lookup::Hit(_)),
                        "acknowledged {h} is not in the table"
                    );
                }
                visible += 1;
            }
            503 => {
                assert_eq!(error_code(&r), "table_unavailable", "{r:?}");
                message = r.body.clone();
                unavailable += 1;
                break;
            }
            _ => panic!("batch {batch}: {r:?}\n{}", w.log()),
        }
    }
    assert_eq!(unavailable, 1, "the table never ran out of room");
    assert!(
        message.contains("stored") && message.contains("full"),
        "{message}"
    );
    assert_eq!(
        unix_request(&w.socket, "GET", "/healthz", &[], None)
            .expect("healthz")
            .status,
        503
    );

    fs::remove_file(&filler).expect("remove filler");
    wait_until("the table to be rebuilt", WAIT, || {
        unix_request(&w.socket, "GET", "/healthz", &[], None).is_ok_and(|r| r.status == 200)
    });
    let store = listed(&w.socket);
    assert_eq!(
        table_entries(&table),
        store,
        "after the rebuild: table and store differ"
    );
    let (ok, failed) = load.finish();
    eprintln!(
        "RELIABILITY table_disk_full visible_batches={visible} unavailable_batches={unavailable} entries={} routed_requests={} failed={failed}",
        store.len(),
        ok + failed
    );
    assert_eq!(failed, 0, "routing failed while the table could not grow");
    drop(n);
    drop(w);
}

#[test]
fn a_read_only_store_fails_the_start_clearly() {
    if skip_unless_root("a_read_only_store_fails_the_start_clearly") {
        return;
    }
    require_writer();
    let data = shared_tempdir();
    let ro = Mount::tmpfs(&data.path().join("ro"), "1m");
    assert!(ro.remount("ro"), "remount read-only");
    let dir = data.path().join("writer");
    fs::create_dir_all(&dir).expect("mkdir");
    let store = ro.0.join("store.redb");
    let out = Writer::command(&dir, Some(TOKEN), &["--store", &store.to_string_lossy()])
        .stdin(Stdio::null())
        .output()
        .expect("run the writer");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("Read-only file system"),
        "the log says why:\n{log}"
    );
    eprintln!("RELIABILITY read_only_store start_refused=1");
}

#[test]
fn the_table_deleted_or_replaced_under_nginx_fails_no_request() {
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let dir = data.path().join("writer");
    let (mut w, n) = writer_behind_nginx(&dir);
    let hosts: Vec<String> = (0..5).map(|i| format!("kept-{i}.example")).collect();
    assert_eq!(upsert_all(&w.socket, &hosts, &a.addr()).status, 200);
    for h in &hosts {
        n.wait_every_worker(h, body_is(&a));
    }
    let load = Load::start(n.port, &hosts, "a", 2);

    // Deleted: the workers keep their mapping; the writer keeps publishing into it.
    fs::remove_file(w.table()).expect("rm table");
    thread::sleep(Duration::from_millis(5500)); // past a 5 s check of the path
    let r = post_entry(&w.socket, "late.example", &a.addr());
    assert!(r.status < 300, "{r:?}");
    n.wait_every_worker("late.example", body_is(&a));

    // Replaced by garbage: the workers log it once each and keep serving.
    let tmp = data.path().join("garbage");
    fs::write(&tmp, vec![0x5a; 64 * 1024]).expect("write");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&tmp, w.table()).expect("rename");
    wait_until(
        "the workers to notice the garbage",
        Duration::from_secs(15),
        || n.error_log().matches("not a set-backend table").count() >= 2,
    );
    // A restarted writer publishes a good table again; the workers map it.
    w.stop();
    let w = Writer::start(&dir, TOKEN);
    let r = post_entry(&w.socket, "again.example", &a.addr());
    assert!(r.status < 300, "{r:?}");
    n.wait_every_worker("again.example", body_is(&a));
    let (ok, failed) = load.finish();
    let log = n.error_log();
    eprintln!(
        "RELIABILITY table_deleted_replaced requests={} failed={failed}",
        ok + failed
    );
    assert_eq!(failed, 0, "{failed} requests failed\n{log}");
    assert_eq!(log.matches("not a set-backend table").count(), 2, "{log}");
    assert!(!log.contains("exited on signal"), "{log}");
    n.assert_clean_log();
}
