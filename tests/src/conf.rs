//! The `http {}` bodies the tests share, and the error-page fixture of both modes.

use std::path::Path;
use std::time::Duration;

use shm_layout::TableWriter;

use crate::{dead_port, write_table, Nginx, Upstream};

/// The usual server: every host routed by `set_backend`, answers tagged with the worker's pid.
pub fn routed(table: &Path) -> impl Fn(u16, &Path) -> String + '_ {
    move |port, _dir| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 location / {{
                     set_backend $backend;
                     add_header X-Worker $pid always;
                     add_header X-Backend $backend always;
                     proxy_pass http://$backend$request_uri;
                 }}
             }}",
            table = table.display()
        )
    }
}

/// The sample configuration's `error_page` lines (the pages are under `html/`).
pub const ERROR_PAGES: &str = "error_page 404 /__set_backend/404.html;
                           error_page 502 /__set_backend/502.html;
                           error_page 503 /__set_backend/503.html;
                           error_page 504 /__set_backend/504.html;";

/// The internal location the sample configuration serves its error pages from.
pub const PAGES_LOCATION: &str = "location /__set_backend/ { internal; alias html/; }";

/// Backends for the 502 and 504 pages: `down.example` on a refused port, `slow.example` on
/// an upstream that answers after 3 s. Returns the table's writer (keep it), the dead port and
/// the slow upstream.
pub fn failing_backends(table: &Path) -> (TableWriter, u16, Upstream) {
    let dead = dead_port();
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(3));
    let w = write_table(
        table,
        &[
            ("down.example", &format!("127.0.0.1:{dead}")),
            ("slow.example", &slow.addr()),
        ],
    );
    (w, dead, slow)
}

/// The 504, 502 and 404 pages for the hosts of [`failing_backends`], and their statuses in the
/// access log (which survive the redirect to the error page's location).
pub fn assert_error_pages(n: &Nginx) {
    let r = n.get("slow.example", "/");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        r.body.contains("This site is taking too long to answer."),
        "{r:?}"
    );
    let r = n.get("down.example", "/");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("This site is not answering."), "{r:?}");
    let r = n.get("unknown.example", "/");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("There isn't a site here."), "{r:?}");
    let log = n.access_log();
    assert!(log.contains("unknown.example 404 miss"), "{log}");
    assert!(log.contains("down.example 502 hit"), "{log}");
}

/// The `make run` layout: `api.$DOMAIN` proxied to the writer's socket, every other host routed.
pub fn with_api(table: &Path, socket: &Path) -> impl Fn(u16, &Path) -> String {
    let worker = "add_header X-Worker $pid always;";
    with_api_and(table, socket, worker, worker)
}

/// [`with_api`] with `api_extra` in the API's server and `routed_extra` in the routed one.
pub fn with_api_and(
    table: &Path,
    socket: &Path,
    api_extra: &str,
    routed_extra: &str,
) -> impl Fn(u16, &Path) -> String {
    let (table, socket) = (table.to_path_buf(), socket.to_path_buf());
    let (api_extra, routed_extra) = (api_extra.to_string(), routed_extra.to_string());
    move |port, _| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 server_name api.test.example;
                 {api_extra}
                 location / {{
                     proxy_pass http://unix:{socket}:;
                     proxy_set_header Host $host;
                 }}
             }}
             server {{
                 listen 127.0.0.1:{port} default_server;
                 {routed_extra}
                 location / {{
                     set_backend $backend;
                     proxy_pass http://$backend$request_uri;
                 }}
             }}",
            table = table.display(),
            socket = socket.display()
        )
    }
}

/// The upstream-mode server: every host routed through the `set_backend` upstream block
/// (`set_backend_peer {peer};`) with upstream keepalive; answers tagged with the worker's pid
/// and `$upstream_addr`, `extra` added to the server.
pub fn upstream_routed(table: &Path, peer: &str, extra: &str) -> impl Fn(u16, &Path) -> String {
    let (table, peer, extra) = (table.to_path_buf(), peer.to_string(), extra.to_string());
    move |port, _dir| {
        format!(
            "set_backend_table {table};
             upstream set_backend {{
                 set_backend_peer {peer};
                 keepalive 16;
             }}
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 add_header X-Worker $pid always;
                 add_header X-Upstream-Addr $upstream_addr always;
                 {extra}
                 location / {{
                     proxy_pass http://set_backend;
                     proxy_http_version 1.1;
                     proxy_set_header Connection \"\";
                     proxy_set_header Host $host;
                 }}
                 {PAGES_LOCATION}
             }}",
            table = table.display()
        )
    }
}
