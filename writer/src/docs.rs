//! The API described twice: an HTML page for people (`GET /`) and an OpenAPI 3.1 document
//! for programs (`GET /openapi.json`). The tests send every documented request to the real
//! router and check the answer against the document, so the two cannot drift apart.

use serde_json::{json, Value};
use shm_layout::{MAX_BACKEND_LEN, MAX_HOST_LEN};

use crate::api::MAX_ENTRY_BODY;
use shm_layout::{MAX_MEMBERS, MAX_WEIGHT};

/// The `GET /` page. `domain` (the `DOMAIN` environment variable) makes the examples name
/// `https://api.$DOMAIN`, as the operator's nginx serves them.
pub fn html(domain: Option<&str>) -> String {
    let base = match domain {
        Some(d) if !d.is_empty() => format!("https://api.{}", escape(d)),
        _ => "http://localhost".to_string(),
    };
    PAGE.replace("{BASE}", &base)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>set-backend API</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
pre { background: #f4f4f4; padding: .6rem .8rem; overflow-x: auto; }
code { background: #f4f4f4; padding: 0 .2rem; }
h2 { border-bottom: 1px solid #ddd; margin-top: 2rem; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .2rem .5rem; text-align: left; }
</style>
</head>
<body>
<h1>set-backend API</h1>
<p>Maps a request <code>Host</code> to a backend (<code>host:port</code>). nginx reads the map on
every request through <code>set_backend $backend;</code>; a change made here is visible to every
nginx worker as soon as the request that made it returns. The machine-readable description is
<a href="/openapi.json"><code>/openapi.json</code></a>.</p>

<h2>Authentication</h2>
<p>Every <code>/entries</code> route needs <code>Authorization: Bearer &lt;token&gt;</code>. The
token is <code>API_TOKEN</code> in the daemon's environment, or the token file (by default
<code>/var/lib/set-backend/token</code>, mode 0600, generated at first start).</p>
<pre>TOKEN=$(cat /var/lib/set-backend/token)</pre>

<h2>Create or update an entry</h2>
<p><code>POST /entries.json</code> with a JSON body. 201 when the host is new, 200 when it
existed. The answer is the entry as stored: hosts are lowercased, lose a port and a trailing
dot, and internationalized names become A-labels (<code>Bücher.Example.</code> &rarr;
<code>xn--bcher-kva.example</code>).</p>
<pre>curl -X POST {BASE}/entries.json \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"host": "some.host.com", "backend": "10.0.0.7:3000"}'</pre>
<p>A backend is <code>name:port</code>, <code>a.b.c.d:port</code> or <code>[v6]:port</code>;
schemes, paths, userinfo, whitespace, <code>?</code> and <code>#</code> are refused.</p>

<h2>List every entry</h2>
<p><code>GET /entries.json</code>: a JSON array of <code>{"host", "backend"}</code> in host
order, streamed from one consistent snapshot.</p>
<pre>curl -H "Authorization: Bearer $TOKEN" {BASE}/entries.json</pre>

<h2>Read one entry</h2>
<p><code>GET /entries/&lt;url_encoded_host&gt;.json</code>: 200 with the entry, 404 if absent.</p>
<pre>curl -H "Authorization: Bearer $TOKEN" {BASE}/entries/some.host.com.json</pre>

<h2>Delete an entry</h2>
<p><code>DELETE /entries/&lt;url_encoded_host&gt;.json</code>: 204, or 404 if absent.</p>
<pre>curl -X DELETE -H "Authorization: Bearer $TOKEN" {BASE}/entries/some.host.com.json</pre>

<h2>Batch (atomic)</h2>
<p><code>PATCH /entries.json</code> applies many upserts and deletes in one transaction: all of
them or none. A host may appear once per batch. Deleting an absent host is counted, not
refused. The answer counts what happened.</p>
<pre>curl -X PATCH {BASE}/entries.json \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"upsert": [{"host": "a.example", "backend": "10.0.0.1:80"}], "delete": ["old.example"]}'
# {"created":1,"updated":0,"deleted":1,"absent":0}</pre>

<h2>Replace everything (atomic)</h2>
<p><code>PUT /entries.json</code> with the same array <code>GET /entries.json</code> returns:
afterwards the map holds exactly these entries. nginx workers switch to the new map at once.</p>
<pre>curl -H "Authorization: Bearer $TOKEN" {BASE}/entries.json &gt; backup.json
curl -X PUT {BASE}/entries.json \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  --data-binary @backup.json
# {"entries":1234}</pre>

<h2>Errors</h2>
<p>Every error has the same shape:</p>
<pre>{"error": {"code": "invalid_backend", "message": "backend has no port; use host:port: \"10.0.0.7\""}}</pre>
<table>
<tr><th>status</th><th>code</th><th>when</th></tr>
<tr><td>400</td><td>invalid_host, invalid_backend</td><td>the value is not acceptable</td></tr>
<tr><td>400</td><td>duplicate_host</td><td>a host twice in one batch or replace</td></tr>
<tr><td>400</td><td>malformed_json, invalid_body</td><td>not JSON, or unknown/missing fields</td></tr>
<tr><td>401</td><td>unauthorized</td><td>no token or a wrong one</td></tr>
<tr><td>429</td><td>too_many_requests</td><td>10 failed authentications from this address; one more per second (<code>Retry-After</code>)</td></tr>
<tr><td>404</td><td>not_found, no_route</td><td>no such entry, no such route</td></tr>
<tr><td>405</td><td>method_not_allowed</td><td>wrong method for the route</td></tr>
<tr><td>413</td><td>payload_too_large</td><td>body over 16 KiB (one entry) or the batch limit</td></tr>
<tr><td>415</td><td>unsupported_media_type</td><td>a body without <code>Content-Type: application/json</code></td></tr>
<tr><td>500, 503</td><td>internal, unavailable, store_unavailable</td><td>nothing was acknowledged; retry</td></tr>
<tr><td>503</td><td>table_unavailable</td><td>stored, but not yet in the table (full disk); retried every second</td></tr>
</table>
<p>A 2xx answer to a write means the change is on disk (committed and fsynced) and already in
the table nginx reads. Anything else means it was not acknowledged.</p>

<h2>Operations</h2>
<p><code>GET /healthz</code> (200 <code>{"status":"ok"}</code>, 503 if the table is out of sync
with the store) and <code>GET /readyz</code> (200 when writes are accepted, 503 while the
store, or etcd in fleet mode, cannot take them) need no token. <code>GET /metrics</code> (Prometheus text) takes the same
token as <code>/entries</code> (for Prometheus: <code>authorization: credentials_file</code>).</p>
</body>
</html>
"#;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn entry_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Entry"}}}
    })
}

/// What the served document depends on: the limits and the backend kinds this daemon
/// enforces.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// Body limit of batch and replace-all requests (`--max-batch-bytes`).
    pub max_batch_bytes: usize,
    /// Only IP-literal backends (`--backends ip`).
    pub ip_backends_only: bool,
}

/// One DNS label as the server accepts it (before lowercasing): letters, digits, `_` and
/// `-`, 1 to 63 characters, not starting or ending with `-`.
const LABEL: &str = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?";
/// An IPv4 address as the server parses it: four decimal octets, no leading zeros.
const IPV4: &str = "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}\
                    (?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
/// The characters of a non-ASCII (internationalized) host: any non-ASCII character, and of
/// ASCII only letters, digits, `-`, `_`, `.` and `:`.
const IDN_CHAR: &str = "[^\\x00-\\x2c\\x2f\\x3b-\\x40\\x5b-\\x5e\\x60\\x7b-\\x7f]";

/// A regular expression for a port of exactly `digits` digits (leading zeros allowed) with a
/// value up to 65535, and at least 1 unless `zero`.
fn port_of(digits: usize, zero: bool) -> String {
    let mut alts = Vec::new();
    if digits < 5 {
        if zero {
            alts.push(format!("[0-9]{{{digits}}}"));
        } else {
            // The first non-zero digit after `a` zeros.
            alts.extend((0..digits).map(|a| format!("0{{{a}}}[1-9][0-9]{{{}}}", digits - 1 - a)));
        }
    } else {
        alts.extend(
            [
                "[1-5][0-9]{4}",
                "6[0-4][0-9]{3}",
                "65[0-4][0-9]{2}",
                "655[0-2][0-9]",
                "6553[0-5]",
            ]
            .map(String::from),
        );
        if zero {
            alts.push("0[0-9]{4}".into());
        } else {
            alts.extend((0..4).map(|a| format!("00{{{a}}}[1-9][0-9]{{{}}}", 3 - a)));
        }
    }
    format!("(?:{})", alts.join("|"))
}

/// A host as a request may give it. An ASCII name of labels, at most 253 characters, then
/// optionally one trailing dot and a `:port` (which the server strips): one branch per form,
/// so each branch's `maxLength` is exact. The same after `*.` (a wildcard, at most 253
/// characters with the `*.`) and after `.` (nginx's shorthand for the name and its wildcard, so
/// the name leaves room for `*.`); or `*` alone (the default entry). A name with non-ASCII
/// characters is converted to A-labels by the server (IDNA, UTS #46): its schema is the
/// characters and the byte limit only. An IPv4 literal is refused.
fn host_schema() -> Value {
    let name = format!("{LABEL}(?:\\.{LABEL})*");
    let mut forms = vec![json!({"type": "string", "pattern": "^\\*$"})];
    for (prefix, limit) in [
        ("", MAX_HOST_LEN),
        ("\\*\\.", MAX_HOST_LEN),
        ("\\.", MAX_HOST_LEN - 1),
    ] {
        let name = format!("{prefix}{name}");
        forms.push(json!({"type": "string", "pattern": format!("^{name}$"), "maxLength": limit}));
        forms.push(
            json!({"type": "string", "pattern": format!("^{name}\\.$"), "maxLength": limit + 1}),
        );
        for dot in [0, 1] {
            let d = if dot == 1 { "\\." } else { "" };
            for digits in 1..=5 {
                forms.push(json!({"type": "string",
                    "pattern": format!("^{name}{d}:{}$", port_of(digits, true)),
                    "maxLength": limit + dot + 1 + digits}));
            }
        }
    }
    forms.push(json!({"type": "string",
        "pattern": format!("^(?:\\*\\.|\\.)?{IDN_CHAR}*[^\\x00-\\x7f]{IDN_CHAR}*$"),
        "maxLength": 4 * MAX_HOST_LEN}));
    json!({
        "type": "string",
        "description": "A host name, as typed: letters, digits, `-` and `_` in labels of 1 to \
            63 characters, at most 253 characters, optionally a trailing dot and a `:port`; or \
            an internationalized name (converted to A-labels). IP literals are refused. \
            Stored lowercase, without port or trailing dot. Patterns, as in nginx's \
            `server_name`: `*.example.com` (every name below example.com), `.example.com` \
            (stored as example.com and *.example.com) and `*` (the default entry); `*` \
            anywhere else is refused. In a path, `*` may be URL-encoded (`%2A`).",
        "anyOf": forms,
        "not": {"pattern": format!("^(?:\\*\\.|\\.)?{IPV4}\\.?(?::[0-9]*)?$")},
        "example": "some.host.com"
    })
}

/// A backend: `name:port`, `a.b.c.d:port` or `[v6]:port` (only the last two under
/// `ip_backends_only`), port 1 to 65535, at most 259 characters. The name form has one branch
/// per port length, so that the name's own limit (253) is exact too; a name made only of
/// digits and dots must be an IPv4 address, and `unix` is refused.
fn backend_schema(ip_only: bool) -> Value {
    let mut forms = Vec::new();
    if !ip_only {
        let name = format!("{LABEL}(?:\\.{LABEL})*");
        for digits in 1..=5 {
            forms.push(json!({"type": "string",
            "pattern": format!("^{name}:{}$", port_of(digits, false)),
            "maxLength": MAX_HOST_LEN + 1 + digits,
            "not": {"anyOf": [
                {"pattern": "^[0-9.]+:"},
                {"pattern": "^[Uu][Nn][Ii][Xx]:"}
            ]}}));
        }
    }
    let port = format!(
        "(?:{})",
        (1..=5)
            .map(|d| port_of(d, false))
            .collect::<Vec<_>>()
            .join("|")
    );
    forms.push(json!({"type": "string", "pattern": format!("^{IPV4}:{port}$")}));
    forms.push(
        json!({"type": "string", "pattern": format!("^\\[[0-9A-Fa-f:.]{{2,45}}\\]:{port}$"),
        "description": "an IPv6 address in RFC 4291 text form, in brackets"}),
    );
    let what = if ip_only {
        "`a.b.c.d:port` or `[v6]:port` (this writer serves nginx's upstream mode, which \
         connects to addresses and does not resolve names)"
    } else {
        "`name:port`, `a.b.c.d:port` or `[v6]:port`"
    };
    json!({
        "type": "string", "maxLength": MAX_BACKEND_LEN,
        "description": format!("Where to send the host's requests: {what}, port 1 to 65535. \
            No scheme, path, userinfo or whitespace."),
        "anyOf": forms,
        "example": "10.0.0.7:3000"
    })
}

/// A request body with its size limit: `x-max-body-bytes` (a larger body is refused with
/// 413), and the schema.
fn request_body(schema: Value, limit: usize, example: Value) -> Value {
    json!({
        "required": true,
        "description": format!("JSON, at most {limit} bytes."),
        "x-max-body-bytes": limit,
        "content": {"application/json": {"schema": schema, "example": example}}
    })
}

/// The OpenAPI 3.1 document served at `/openapi.json`: every constraint the server enforces
/// on a request is declared in it (the tests send requests just inside and just outside each
/// one and check the server agrees with the schema).
pub fn openapi(contract: Contract) -> Value {
    let host_param = json!({
        "name": "file", "in": "path", "required": true,
        "description": "The URL-encoded host (see the `Host` schema) followed by `.json`, \
            e.g. `some.host.com.json`.",
        "schema": {"type": "string", "pattern": "\\.json$"},
        "example": "some.host.com.json"
    });
    let entry_ref = json!({"$ref": "#/components/schemas/Entry"});
    let entries_ref = json!({"type": "array", "items": {"$ref": "#/components/schemas/Entry"}});
    let batch = contract.max_batch_bytes;
    let unauthorized = json!({
        "description": "no or wrong token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    let throttled = json!({
        "description": "this address failed authentication too often; the token was not \
            looked at (10 failures, then one more per second)",
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    // A write's answers: its own successes, then the refusals every write shares.
    let write_responses = |mut ok: Value, bad: &str, limit: usize| {
        let shared = json!({
            "400": error_response(bad),
            "401": unauthorized.clone(),
            "429": throttled.clone(),
            "413": error_response(&format!("body over {limit} bytes")),
            "415": error_response("not application/json"),
            "500": error_response("not acknowledged"),
            "503": error_response("shutting down; not acknowledged")
        });
        if let (Value::Object(ok), Value::Object(shared)) = (&mut ok, shared) {
            ok.extend(shared);
        }
        ok
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "set-backend",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Host → backend routing table for nginx's set_backend module. \
                A 2xx answer to a write means the change is committed durably and published \
                to the table nginx reads."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer <token>`: the daemon's API_TOKEN or \
                    its token file. Every `/entries` route and `/metrics` need it."}},
            "schemas": {
                "Host": host_schema(),
                "Backend": backend_schema(contract.ip_backends_only),
                "Entry": {
                    "type": "object", "additionalProperties": false,
                    "description": "`backend` (one backend, the original form) or `backends` \
                        (a backend set), exactly one of them; answers use the form written.",
                    "required": ["host"],
                    "oneOf": [{"required": ["backend"]}, {"required": ["backends"]}],
                    "properties": {
                        "host": {"$ref": "#/components/schemas/Host"},
                        "backend": {"$ref": "#/components/schemas/Backend"},
                        "backends": {
                            "type": "array", "minItems": 1, "maxItems": MAX_MEMBERS,
                            "description": "At least one member that is not a backup; no \
                                backend twice (`x-unique-by`). Replaced as a whole.",
                            "items": {"$ref": "#/components/schemas/Member"},
                            "contains": {"not": {"required": ["backup"],
                                "properties": {"backup": {"const": true}}}},
                            "x-unique-by": "backend"
                        }
                    }
                },
                "Member": {
                    "type": "object", "additionalProperties": false,
                    "required": ["backend"],
                    "properties": {
                        "backend": {"$ref": "#/components/schemas/Backend"},
                        "weight": {"type": "integer", "minimum": 1, "maximum": MAX_WEIGHT,
                            "default": 1},
                        "backup": {"type": "boolean", "default": false,
                            "description": "used only when no primary can be"}
                    }
                },
                "Batch": {
                    "type": "object", "additionalProperties": false,
                    "description": "Applied all or nothing. A host may appear once in all of \
                        `upsert` and `delete` together (compared after normalization).",
                    "properties": {
                        "upsert": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}},
                        "delete": {"type": "array", "items": {"$ref": "#/components/schemas/Host"}}
                    }
                },
                "BatchResult": {
                    "type": "object", "required": ["created", "updated", "deleted", "absent"],
                    "properties": {
                        "created": {"type": "integer"}, "updated": {"type": "integer"},
                        "deleted": {"type": "integer"}, "absent": {"type": "integer"}
                    }
                },
                "ReplaceResult": {
                    "type": "object", "required": ["entries"],
                    "properties": {"entries": {"type": "integer"}}
                },
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {
                        "type": "object", "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": [
                                "unauthorized", "too_many_requests", "invalid_host", "invalid_backend",
                                "duplicate_host", "malformed_json", "invalid_body",
                                "payload_too_large", "unsupported_media_type", "not_found",
                                "no_route", "method_not_allowed", "unavailable",
                                "store_unavailable", "table_unavailable", "internal",
                                "batch_too_large", "conflict", "wait_timeout", "invalid_wait"
                            ]},
                            "message": {"type": "string"}
                        }
                    }}
                }
            }
        },
        "paths": {
            "/": {"get": {
                "summary": "This API's documentation as HTML",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}
            }},
            "/healthz": {"get": {
                "summary": "Health: the store is open and the table matches it",
                "responses": {
                    "200": {"description": "healthy", "content": {"application/json": {}}},
                    "503": {"description": "the table is out of sync with the store",
                        "content": {"application/json": {}}}
                }
            }},
            "/readyz": {"get": {
                "summary": "Readiness: writes are accepted (the store, or etcd in fleet mode, answers)",
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {}}},
                    "503": {"description": "writes are not accepted now; routing goes on",
                        "content": {"application/json": {}}}
                }
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "Prometheus text format",
                    "content": {"text/plain": {}}},
                    "401": unauthorized.clone(),
                    "429": throttled.clone()}
            }},
            "/entries.json": {
                "get": {
                    "summary": "Every entry, in host order",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {"description": "all entries", "content": {"application/json": {
                            "schema": entries_ref}}},
                        "401": unauthorized.clone(),
                        "429": throttled.clone()
                    }
                },
                "post": {
                    "summary": "Create or update one entry",
                    "security": [{"bearer": []}],
                    "requestBody": request_body(entry_ref, MAX_ENTRY_BODY,
                        json!({"host": "some.host.com", "backend": "10.0.0.7:3000"})),
                    "responses": write_responses(json!({
                        "200": entry_response("updated; the entry as stored"),
                        "201": entry_response("created; the entry as stored")
                    }), "invalid host, backend or body", MAX_ENTRY_BODY)
                },
                "patch": {
                    "summary": "Atomic batch of upserts and deletes (all or nothing)",
                    "security": [{"bearer": []}],
                    "requestBody": request_body(json!({"$ref": "#/components/schemas/Batch"}),
                        batch, json!({"upsert": [{"host": "a.example", "backend": "10.0.0.1:80"}],
                            "delete": ["old.example"]})),
                    "responses": write_responses(json!({
                        "200": {"description": "applied", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/BatchResult"}}}}
                    }), "an invalid or duplicate host, backend or body; nothing applied", batch)
                },
                "put": {
                    "summary": "Atomically replace every entry",
                    "security": [{"bearer": []}],
                    "requestBody": request_body(entries_ref.clone(), batch,
                        json!([{"host": "some.host.com", "backend": "10.0.0.7:3000"}])),
                    "responses": write_responses(json!({
                        "200": {"description": "replaced", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ReplaceResult"}}}}
                    }), "an invalid or duplicate entry; nothing changed", batch)
                }
            },
            "/entries/{file}": {
                "get": {
                    "summary": "One entry",
                    "security": [{"bearer": []}],
                    "parameters": [host_param.clone()],
                    "responses": {
                        "200": entry_response("the entry"),
                        "400": error_response("not a valid host"),
                        "401": unauthorized.clone(),
                        "429": throttled.clone(),
                        "404": error_response("no such entry")
                    }
                },
                "delete": {
                    "summary": "Delete one entry",
                    "security": [{"bearer": []}],
                    "parameters": [host_param],
                    "responses": {
                        "204": {"description": "deleted"},
                        "400": error_response("not a valid host"),
                        "401": unauthorized.clone(),
                        "429": throttled.clone(),
                        "404": error_response("no such entry"),
                        "500": error_response("not acknowledged"),
                        "503": error_response("shutting down; not acknowledged")
                    }
                }
            }
        }
    })
}
