//! [`Upstream`]: the backend the tests route to, a tiny HTTP server on a free port.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::Response;

/// A backend: answers every request with `upstream=<name> host=<Host> uri=<uri>`. It keeps an
/// HTTP/1.1 connection open for the next request unless the request says `Connection: close`
/// (nginx's `keepalive` needs that), and counts the connections it accepted and the requests
/// it answered. [`Upstream::kill`] stops it the way a killed process stops.
pub struct Upstream {
    pub name: String,
    pub port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// The open connections, to reset on `kill`.
    open: Arc<Mutex<HashMap<usize, TcpStream>>>,
    accepting: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Upstream::start_with_delay(name, Duration::ZERO)
    }

    /// An upstream that waits `delay` before it answers (for timeouts).
    pub fn start_with_delay(name: &str, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        Upstream::serve_on(name, listener, delay)
    }

    /// An upstream on `port` again, after [`Upstream::kill`] (its counts start from zero).
    pub fn restart(name: &str, port: u16) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind upstream again");
        Upstream::serve_on(name, listener, Duration::ZERO)
    }

    fn serve_on(name: &str, listener: TcpListener, delay: Duration) -> Upstream {
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Mutex::new(HashMap::new()));
        let (n, flag, conns, reqs, open2) = (
            name.to_string(),
            stop.clone(),
            connections.clone(),
            requests.clone(),
            open.clone(),
        );
        let accepting = thread::spawn(move || {
            for (id, conn) in listener.incoming().enumerate() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                conns.fetch_add(1, Ordering::Relaxed);
                if let Ok(clone) = conn.try_clone() {
                    open2.lock().expect("open connections").insert(id, clone);
                }
                let (n, reqs, flag, open) = (n.clone(), reqs.clone(), flag.clone(), open2.clone());
                thread::spawn(move || {
                    serve(conn, &n, delay, &reqs, &flag);
                    open.lock().expect("open connections").remove(&id);
                });
            }
        });
        Upstream {
            name: name.to_string(),
            port,
            stop,
            connections,
            requests,
            open,
            accepting: Mutex::new(Some(accepting)),
        }
    }

    /// Stops like a killed process: the port refuses connections from now on, and every open
    /// connection is reset, requests in flight included.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accepting.lock().expect("accept thread").take() {
            let _ = t.join();
        }
        for (_, conn) in self.open.lock().expect("open connections").drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// `127.0.0.1:<port>`, as the table stores it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Answers the requests of one connection until the client closes it, asks to close it, is
/// idle for 5 s, or the upstream stops.
fn serve(
    mut conn: TcpStream,
    name: &str,
    delay: Duration,
    requests: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let header = |name: &str| {
            head.split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let body_len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + body_len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + body_len);
        let request_line = head.split("\r\n").next().unwrap_or("");
        let uri = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let keep_alive = request_line.ends_with("HTTP/1.1")
            && !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            && !stop.load(Ordering::Relaxed);
        let host = header("host").unwrap_or_default();
        thread::sleep(delay);
        let body = format!("upstream={name} host={host} uri={uri}");
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        if !keep_alive {
            // Let the client (nginx) close first, so the TIME_WAIT state stays on its side:
            // closing here first under thousands of connections a second leaves the
            // upstream's port pairs in TIME_WAIT, and new connects to it stall.
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {}
            return;
        }
    }
}

/// True for a 200 answered by `upstream`.
pub fn body_is(upstream: &Upstream) -> impl Fn(&Response) -> bool + '_ {
    move |r| r.status == 200 && r.body.starts_with(&format!("upstream={} ", upstream.name))
}
