//! The API described twice: an HTML page for people (`GET /`) and an OpenAPI 3.1 document
//! for programs (`GET /openapi.json`). The tests send every documented request to the real
//! router and check the answer against the document, so the two cannot drift apart.

use serde_json::{json, Value};

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
with the store) needs no token. <code>GET /metrics</code> (Prometheus text) takes the same
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

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub fn openapi() -> Value {
    let host_param = json!({
        "name": "file", "in": "path", "required": true,
        "description": "The URL-encoded host followed by `.json`, e.g. `some.host.com.json`.",
        "schema": {"type": "string", "pattern": "\\.json$"},
        "example": "some.host.com.json"
    });
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
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Entry": {
                    "type": "object", "additionalProperties": false,
                    "required": ["host", "backend"],
                    "properties": {
                        "host": {"type": "string", "maxLength": 1012,
                            "description": "Stored lowercase, without port or trailing dot, \
                                internationalized names as A-labels."},
                        "backend": {"type": "string", "maxLength": 259,
                            "description": "host:port, a.b.c.d:port or [v6]:port."}
                    }
                },
                "Batch": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "upsert": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}},
                        "delete": {"type": "array", "items": {"type": "string"}}
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
                                "unauthorized", "invalid_host", "invalid_backend",
                                "duplicate_host", "malformed_json", "invalid_body",
                                "payload_too_large", "unsupported_media_type", "not_found",
                                "no_route", "method_not_allowed", "unavailable",
                                "store_unavailable", "table_unavailable", "internal"
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
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "Prometheus text format",
                    "content": {"text/plain": {}}},
                    "401": error_response("no or wrong token")}
            }},
            "/entries.json": {
                "get": {
                    "summary": "Every entry, in host order",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {"description": "all entries", "content": {"application/json": {
                            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}}}}},
                        "401": error_response("no or wrong token")
                    }
                },
                "post": {
                    "summary": "Create or update one entry",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Entry"},
                        "example": {"host": "some.host.com", "backend": "10.0.0.7:3000"}}}},
                    "responses": {
                        "200": entry_response("updated; the entry as stored"),
                        "201": entry_response("created; the entry as stored"),
                        "400": error_response("invalid host, backend or body"),
                        "401": error_response("no or wrong token"),
                        "413": error_response("body over 16 KiB"),
                        "415": error_response("not application/json"),
                        "500": error_response("not acknowledged"),
                        "503": error_response("shutting down; not acknowledged")
                    }
                },
                "patch": {
                    "summary": "Atomic batch of upserts and deletes (all or nothing)",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Batch"},
                        "example": {"upsert": [{"host": "a.example", "backend": "10.0.0.1:80"}],
                            "delete": ["old.example"]}}}},
                    "responses": {
                        "200": {"description": "applied", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/BatchResult"}}}},
                        "400": error_response("an invalid or duplicate host, backend or body; nothing applied"),
                        "401": error_response("no or wrong token"),
                        "413": error_response("body over the batch limit"),
                        "415": error_response("not application/json"),
                        "500": error_response("not acknowledged"),
                        "503": error_response("shutting down; not acknowledged")
                    }
                },
                "put": {
                    "summary": "Atomically replace every entry",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}},
                        "example": [{"host": "some.host.com", "backend": "10.0.0.7:3000"}]}}},
                    "responses": {
                        "200": {"description": "replaced", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ReplaceResult"}}}},
                        "400": error_response("an invalid or duplicate entry; nothing changed"),
                        "401": error_response("no or wrong token"),
                        "413": error_response("body over the batch limit"),
                        "415": error_response("not application/json"),
                        "500": error_response("not acknowledged"),
                        "503": error_response("shutting down; not acknowledged")
                    }
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
                        "401": error_response("no or wrong token"),
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
                        "401": error_response("no or wrong token"),
                        "404": error_response("no such entry"),
                        "500": error_response("not acknowledged"),
                        "503": error_response("shutting down; not acknowledged")
                    }
                }
            }
        }
    })
}
