//! The OpenAPI document checked against what the router does: every documented operation
//! answers as documented, and every constraint the server enforces is declared (requests just
//! inside and just outside each limit get the answer the schema predicts).

mod common;

use std::collections::BTreeSet;

use common::{RouterHarness, TOKEN};
use hyper::Method;
use serde_json::{json, Value};

/// Every operation the OpenAPI document lists is routed, answers its example with a
/// documented status and body shape; every method it does not list is a 405.
#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let h = RouterHarness::new();
    let spec = h.call(Method::GET, "/openapi.json", &[], "").await.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let schemas = &spec["components"]["schemas"];
    let all = ["get", "post", "put", "patch", "delete"];
    let paths = spec["paths"].as_object().unwrap();
    let mut seen = BTreeSet::new();
    // Order matters for the entry routes: create before read and delete.
    let order = ["post", "patch", "put", "get", "delete"];
    let mut ops = Vec::new();
    for (path, item) in paths {
        for m in order {
            if let Some(op) = item.get(m) {
                ops.push((path.clone(), m, op.clone()));
            }
        }
        for m in all {
            if item.get(m).is_none() {
                let uri = path.replace("{file}", "some.host.com.json");
                let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
                let auth = format!("Bearer {TOKEN}");
                let r = h.call(method, &uri, &[("authorization", &auth)], "").await;
                assert_eq!(
                    r.status, 405,
                    "{m} {path} is not documented, so not allowed"
                );
            }
        }
    }
    for (path, m, op) in ops {
        let mut uri = path.clone();
        for p in op["parameters"].as_array().into_iter().flatten() {
            uri = uri.replace(
                &format!("{{{}}}", p["name"].as_str().unwrap()),
                p["example"].as_str().unwrap(),
            );
        }
        let body = op["requestBody"]["content"]["application/json"]["example"].clone();
        let body = (!body.is_null()).then_some(body);
        let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let r = h.api(method, &uri, body).await;
        let status = r.status.to_string();
        let documented = &op["responses"][&status];
        assert!(
            documented.is_object(),
            "{m} {path} answered {status}, not documented: {}",
            r.text()
        );
        if let Some(schema) = documented["content"]["application/json"]["schema"].as_object() {
            check_shape(
                &r.json(),
                &Value::Object(schema.clone()),
                schemas,
                &format!("{m} {path}"),
            );
        }
        if op.get("security").is_some() {
            let r = h
                .call(
                    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap(),
                    &uri,
                    &[],
                    "",
                )
                .await;
            assert_eq!(r.status, 401);
            assert!(
                op["responses"]["401"].is_object(),
                "{m} {path} documents its 401"
            );
        }
        seen.insert((path, m));
    }
    for (path, m) in [
        ("/", "get"),
        ("/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/entries.json", "get"),
        ("/entries.json", "post"),
        ("/entries.json", "patch"),
        ("/entries.json", "put"),
        ("/entries/{file}", "get"),
        ("/entries/{file}", "delete"),
    ] {
        assert!(
            seen.contains(&(path.to_string(), m)),
            "{m} {path} is served but not documented"
        );
    }
    // Every error code the server uses is in the document's enum.
    let codes = &schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    for c in [
        "unauthorized",
        "invalid_host",
        "invalid_backend",
        "duplicate_host",
        "malformed_json",
        "invalid_body",
        "payload_too_large",
        "unsupported_media_type",
        "not_found",
        "no_route",
        "method_not_allowed",
        "unavailable",
        "internal",
    ] {
        assert!(
            codes.as_array().unwrap().contains(&json!(c)),
            "{c} not documented"
        );
    }
}

/// A small structural check: `$ref`, object required fields and no extra fields when
/// `additionalProperties` is false, arrays item by item, scalar types.
fn check_shape(v: &Value, schema: &Value, schemas: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check_shape(v, &schemas[name], schemas, at);
    }
    match schema["type"].as_str() {
        Some("object") => {
            let o = v
                .as_object()
                .unwrap_or_else(|| panic!("{at}: {v} is not an object"));
            for req in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    o.contains_key(req.as_str().unwrap()),
                    "{at}: {v} lacks {req}"
                );
            }
            for (k, sub) in o {
                match schema["properties"].get(k) {
                    Some(s) => check_shape(sub, s, schemas, at),
                    None => assert!(
                        schema["additionalProperties"] != json!(false),
                        "{at}: extra field {k}"
                    ),
                }
            }
        }
        Some("array") => {
            for item in v
                .as_array()
                .unwrap_or_else(|| panic!("{at}: {v} is not an array"))
            {
                check_shape(item, &schema["items"], schemas, at);
            }
        }
        Some("string") => assert!(v.is_string(), "{at}: {v} is not a string"),
        Some("integer") => assert!(v.is_u64() || v.is_i64(), "{at}: {v} is not an integer"),
        _ => {}
    }
}

/// Whether `v` satisfies `schema`: the JSON Schema keywords the document uses (`$ref`,
/// `type`, `required`, `properties`, `additionalProperties`, `items`, `minItems`, `maxItems`,
/// `contains`, `maxLength`, `pattern`, `minimum`, `maximum`, `const`, `anyOf`, `oneOf`, `not`)
/// and its one extension, `x-unique-by` (no two items of an array with the same value of that
/// field).
fn conforms(v: &Value, schema: &Value, schemas: &Value) -> bool {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(v, &schemas[name], schemas);
    }
    let typed = match schema["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.as_array().is_some_and(|a| {
            let len = a.len() as u64;
            let unique = schema["x-unique-by"].as_str().is_none_or(|field| {
                let keys: BTreeSet<String> = a.iter().map(|i| i[field].to_string()).collect();
                keys.len() == a.len()
            });
            a.iter().all(|i| conforms(i, &schema["items"], schemas))
                && schema["minItems"].as_u64().is_none_or(|m| len >= m)
                && schema["maxItems"].as_u64().is_none_or(|m| len <= m)
                && schema
                    .get("contains")
                    .is_none_or(|c| a.iter().any(|i| conforms(i, c, schemas)))
                && unique
        }),
        Some("string") => v.as_str().is_some_and(|s| {
            let max = schema["maxLength"].as_u64().unwrap_or(u64::MAX);
            let pattern = schema["pattern"].as_str().unwrap_or("");
            s.chars().count() as u64 <= max && regex::Regex::new(pattern).unwrap().is_match(s)
        }),
        Some("integer") => {
            (v.is_u64() || v.is_i64()) && {
                let n = v.as_i64().unwrap_or(i64::MAX);
                schema["minimum"].as_i64().is_none_or(|m| n >= m)
                    && schema["maximum"].as_i64().is_none_or(|m| n <= m)
            }
        }
        Some("boolean") => v.is_boolean(),
        Some(other) => panic!("type {other} is not checked here"),
        None => match schema["pattern"].as_str() {
            // An untyped `{"pattern"}` constrains strings only.
            Some(p) => v
                .as_str()
                .is_none_or(|s| regex::Regex::new(p).unwrap().is_match(s)),
            None => true,
        },
    };
    // `required`, `properties` and `additionalProperties` constrain objects, typed or not
    // (the `oneOf` alternatives of an entry are bare `{"required": [...]}`).
    let fields = v.as_object().is_none_or(|o| {
        let mut names = schema["required"].as_array().into_iter().flatten();
        names.all(|r| o.contains_key(r.as_str().unwrap()))
            && o.iter().all(|(k, sub)| match schema["properties"].get(k) {
                Some(s) => conforms(sub, s, schemas),
                None => schema["additionalProperties"] != json!(false),
            })
    });
    typed
        && fields
        && schema.get("const").is_none_or(|c| c == v)
        && schema["anyOf"]
            .as_array()
            .is_none_or(|a| a.iter().any(|s| conforms(v, s, schemas)))
        && schema["oneOf"]
            .as_array()
            .is_none_or(|a| a.iter().filter(|s| conforms(v, s, schemas)).count() == 1)
        && schema.get("not").is_none_or(|n| !conforms(v, n, schemas))
}

/// `n` characters of labels of at most 63 letters joined by dots: a name exactly `n` long.
fn name_of_len(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        if !s.is_empty() {
            s.push('.');
        }
        let label = (n - s.len()).min(63);
        // A label ending in a dot would be empty: keep two characters for the next one.
        let label = if n - s.len() - label == 1 {
            label - 1
        } else {
            label
        };
        s.extend(std::iter::repeat_n('a', label));
    }
    s
}

/// Hosts just inside and just outside each limit the server puts on a host: whether it
/// should be accepted, and the host.
fn host_cases() -> Vec<(bool, String)> {
    let n = |k| name_of_len(k);
    vec![
        (true, n(253)),
        (false, n(254)),
        (true, format!("{}.", n(253))),
        (false, format!("{}.", n(254))),
        (true, format!("{}:65535", n(253))),
        (false, format!("{}:65536", n(253))),
        (false, format!("{}:8", n(254))),
        (true, format!("{}.:0", n(253))),
        (false, format!("{}.:80", n(254))),
        (false, "a.example:".into()),
        (false, "a.example:123456".into()),
        (true, format!("{}.example", "x".repeat(63))),
        (false, format!("{}.example", "x".repeat(64))),
        (true, "_a.example".into()),
        (true, "a_b-c.Example".into()),
        (false, "-a.example".into()),
        (false, "a-.example".into()),
        (false, "a..example".into()),
        (true, ".a.example".into()),
        (false, "..a.example".into()),
        (true, "*".into()),
        (true, "*.Example.".into()),
        (true, format!("*.{}", n(251))),
        (false, format!("*.{}", n(252))),
        (true, format!("*.{}.:80", n(251))),
        (true, format!(".{}", n(251))),
        (false, format!(".{}", n(252))),
        (false, "a*.example".into()),
        (false, "example.*".into()),
        (false, "*.*.example".into()),
        (false, "**".into()),
        (false, "*:80".into()),
        (false, "*.".into()),
        (false, "*.1.2.3.4".into()),
        (false, ".1.2.3.4".into()),
        (true, "*.bücher.example".into()),
        (false, "".into()),
        (false, "a b.example".into()),
        (false, "a/b.example".into()),
        (false, "a@b.example".into()),
        (true, "*.example".into()),
        (false, "[::1]".into()),
        (false, "1.2.3.4".into()),
        (false, "1.2.3.4.".into()),
        (false, "1.2.3.4:80".into()),
        (true, "1.2.3.256".into()),
        (true, "bücher.example".into()),
    ]
}

/// Backends just inside and just outside each limit the server puts on a backend, for the
/// default mode (`ip_only` false) and the IP-only mode: whether accepted, and the backend.
fn backend_cases(ip_only: bool) -> Vec<(bool, String)> {
    let name = !ip_only;
    let n = |k| name_of_len(k);
    vec![
        (name, "web:1".into()),
        (false, "web:0".into()),
        (name, "web:65535".into()),
        (false, "web:65536".into()),
        (name, "web:08080".into()),
        (false, "web:008080".into()),
        (false, "web".into()),
        (false, "web:".into()),
        (name, format!("{}:80", n(253))),
        (false, format!("{}:80", n(254))),
        (name, format!("{}:65535", n(253))),
        (false, format!("{}:1", n(254))),
        (name, format!("{}.example:80", "x".repeat(63))),
        (false, format!("{}.example:80", "x".repeat(64))),
        (false, "unix:80".into()),
        (false, "UNIX:80".into()),
        (name, "unixx:80".into()),
        (name, "Web_1.Internal:80".into()),
        (false, "-web:80".into()),
        (false, "web.:80".into()),
        (true, "1.1.1.1:80".into()),
        (false, "1.1.1.1:0".into()),
        (false, "999.1.1.1:80".into()),
        (false, "01.1.1.1:80".into()),
        (true, "[::1]:80".into()),
        (true, "[FD00::1]:65535".into()),
        (false, "[::1]:0".into()),
        (false, "[::1]80".into()),
        (false, "[fd00::g]:80".into()),
        (false, "http://web:80".into()),
        (false, "web:80/path".into()),
        (false, "user@web:80".into()),
        (false, "a b:80".into()),
        (false, "".into()),
    ]
}

/// Backend sets just inside and just outside each limit the server puts on a set (its
/// members' backends are probed by `backend_cases`): whether accepted, and the entry's fields
/// besides `host`.
fn set_cases() -> Vec<(bool, Value)> {
    let m = |i: usize| json!({"backend": format!("10.0.0.{i}:80")});
    let set = |n: usize| Value::Array((1..=n).map(m).collect());
    let one = |member: Value| json!({"backends": [member]});
    let a = "10.0.0.1:80";
    vec![
        (true, json!({"backends": set(1)})),
        (true, json!({"backends": set(shm_layout::MAX_MEMBERS)})),
        (false, json!({"backends": set(shm_layout::MAX_MEMBERS + 1)})),
        (false, json!({"backends": []})),
        (false, json!({"backends": "10.0.0.1:80"})),
        (false, json!({"backends": set(2), "backend": a})),
        (false, json!({})),
        (true, one(json!({"backend": a, "weight": 1}))),
        (true, one(json!({"backend": a, "weight": 100}))),
        (false, one(json!({"backend": a, "weight": 0}))),
        (false, one(json!({"backend": a, "weight": 101}))),
        (false, one(json!({"backend": a, "weight": -1}))),
        (false, one(json!({"backend": a, "weight": 1.5}))),
        (false, one(json!({"backend": a, "weight": "2"}))),
        (true, one(json!({"backend": a, "backup": false}))),
        (false, one(json!({"backend": a, "backup": true}))),
        (false, one(json!({"backend": a, "backup": "no"}))),
        (false, one(json!({"backend": a, "down": true}))),
        (false, one(json!({"weight": 2}))),
        (
            true,
            json!({"backends": [m(1), {"backend": "10.0.0.2:80", "backup": true}]}),
        ),
        (false, json!({"backends": [m(1), m(1)]})),
        (
            false,
            json!({"backends": [m(1), {"backend": a, "weight": 2}]}),
        ),
        (
            true,
            json!({"backends": [m(1), {"backend": "[::1]:80", "weight": 3}]}),
        ),
    ]
}

/// A JSON `body` padded with spaces to exactly `len` bytes.
fn padded(body: &Value, len: usize) -> Vec<u8> {
    let mut b = serde_json::to_vec(body).unwrap();
    assert!(b.len() <= len);
    b.resize(len, b' ');
    b
}

/// Each enforced constraint, probed just inside and just outside: the document's schema and
/// the server's answer agree with each other and with the expected verdict. A constraint the
/// document left out would show as a request the schema accepts and the server refuses.
#[tokio::test]
async fn the_openapi_document_declares_every_enforced_limit() {
    for ip_only in [false, true] {
        let h = RouterHarness::with(|s| s.ip_backends_only = ip_only);
        let spec = h.call(Method::GET, "/openapi.json", &[], "").await.json();
        let schemas = &spec["components"]["schemas"];
        let body_of = |m: &str| &spec["paths"]["/entries.json"][m]["requestBody"];
        let schema_of = |m: &str| &body_of(m)["content"]["application/json"]["schema"];
        let mut probes: Vec<(bool, Method, &str, Value)> = Vec::new();
        for (ok, host) in host_cases() {
            let entry = json!({"host": host, "backend": "10.0.0.1:80"});
            probes.push((ok, Method::POST, "post", entry));
            probes.push((ok, Method::PATCH, "patch", json!({"delete": [host]})));
        }
        // Entries (a backend, then backend sets), each written the three ways.
        let backends = backend_cases(ip_only)
            .into_iter()
            .map(|(ok, b)| (ok, json!({"host": "b.example", "backend": b})));
        let sets = set_cases().into_iter().map(|(ok, mut entry)| {
            entry["host"] = json!("s.example");
            (ok, entry)
        });
        for (ok, entry) in backends.chain(sets) {
            probes.push((ok, Method::POST, "post", entry.clone()));
            probes.push((
                ok,
                Method::PATCH,
                "patch",
                json!({"upsert": [entry.clone()]}),
            ));
            probes.push((ok, Method::PUT, "put", json!([entry])));
        }
        let mut checked = 0;
        for (expected, method, m, body) in probes {
            let schema_ok = conforms(&body, schema_of(m), schemas);
            let r = h
                .api(method.clone(), "/entries.json", Some(body.clone()))
                .await;
            let server_ok = (200..300).contains(&r.status);
            assert_eq!(
                (schema_ok, server_ok),
                (expected, expected),
                "ip_only={ip_only} {method} {body}: schema and server (answered {} {}) \
                 must both {}",
                r.status,
                r.text(),
                if expected { "accept" } else { "refuse" }
            );
            checked += 1;
        }
        assert!(checked > 220, "{checked} probes");

        // Body sizes: exactly the declared limit is read, one byte more is refused.
        let entry = json!({"host": "size.example", "backend": "10.0.0.1:80"});
        for (method, m, body) in [
            (Method::POST, "post", entry.clone()),
            (Method::PATCH, "patch", json!({"upsert": [entry.clone()]})),
            (Method::PUT, "put", json!([entry])),
        ] {
            let limit = body_of(m)["x-max-body-bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("{m} declares no body limit"))
                as usize;
            for (len, expected) in [(limit, true), (limit + 1, false)] {
                let auth = format!("Bearer {TOKEN}");
                let headers = [
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ];
                let r = h
                    .call(
                        method.clone(),
                        "/entries.json",
                        &headers,
                        padded(&body, len),
                    )
                    .await;
                let status = if expected {
                    r.status / 100 == 2
                } else {
                    r.status == 413
                };
                assert!(status, "{m} with {len} bytes (limit {limit}): {}", r.status);
                assert!(spec["paths"]["/entries.json"][m]["responses"]["413"].is_object());
            }
        }
    }
}
