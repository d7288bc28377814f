//! Backend sets through the API: `"backends": […]` written, answered and listed in the form
//! written, published whole into the table; every refusal changes nothing.

mod common;

use common::{RouterHarness, TOKEN};
use hyper::Method;
use serde_json::{json, Value};
use shm_layout::{Lookup, Table};

/// Every member of `host`'s set in the table: (backend, weight, backup), in table order.
fn table_set(h: &RouterHarness, host: &str) -> Vec<(String, u8, bool)> {
    let t = Table::open(&h.table_path).unwrap();
    let Lookup::Hit(v) = t.lookup(host.as_bytes()) else {
        panic!("{host} is not in the table");
    };
    (0..v.members())
        .map(|i| {
            let m = v.member(i).unwrap();
            (m.as_str().to_owned(), m.weight(), m.backup())
        })
        .collect()
}

#[tokio::test]
async fn a_set_is_written_answered_and_published_in_the_form_written() {
    let h = RouterHarness::new();
    let set = json!({"host": "Pages.Example", "backends": [
        {"backend": "10.0.0.1:80", "weight": 3},
        {"backend": "10.0.0.2:80"},
        {"backend": "10.0.0.3:80", "backup": true}
    ]});
    let written = json!({"host": "pages.example", "backends": [
        {"backend": "10.0.0.1:80", "weight": 3},
        {"backend": "10.0.0.2:80", "weight": 1},
        {"backend": "10.0.0.3:80", "weight": 1, "backup": true}
    ]});
    let r = h.api(Method::POST, "/entries.json", Some(set)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), written);
    let r = h
        .api(Method::GET, "/entries/pages.example.json", None)
        .await;
    assert_eq!(r.json(), written);
    let r = h.api(Method::GET, "/entries.json", None).await;
    assert_eq!(r.json(), json!([written]));
    assert_eq!(
        table_set(&h, "pages.example"),
        vec![
            ("10.0.0.1:80".into(), 3, false),
            ("10.0.0.2:80".into(), 1, false),
            ("10.0.0.3:80".into(), 1, true)
        ]
    );

    // A set of one written as a list stays a list; the single form stays single.
    let r = h
        .api(
            Method::POST,
            "/entries.json",
            Some(json!({"host": "pages.example", "backends": [{"backend": "10.0.0.9:80"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"host": "pages.example", "backends": [{"backend": "10.0.0.9:80", "weight": 1}]})
    );
    assert_eq!(
        table_set(&h, "pages.example"),
        vec![("10.0.0.9:80".into(), 1, false)]
    );
    let r = h
        .api(
            Method::POST,
            "/entries.json",
            Some(json!({"host": "pages.example", "backend": "10.0.0.8:80"})),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"host": "pages.example", "backend": "10.0.0.8:80"})
    );
    assert_eq!(
        table_set(&h, "pages.example"),
        vec![("10.0.0.8:80".into(), 1, false)]
    );
}

#[tokio::test]
async fn batch_replace_all_and_the_shorthand_take_sets() {
    let h = RouterHarness::new();
    let pair = json!([{"backend": "10.0.0.1:80", "weight": 2}, {"backend": "10.0.0.2:80"}]);
    let r = h
        .api(
            Method::PATCH,
            "/entries.json",
            Some(json!({"upsert": [
                {"host": "a.example", "backends": pair},
                {"host": "b.example", "backend": "10.0.0.3:80"},
                {"host": ".c.example", "backends": pair}
            ]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["created"], 4);
    for host in ["a.example", "c.example", "x.c.example"] {
        assert_eq!(
            table_set(&h, host),
            vec![
                ("10.0.0.1:80".into(), 2, false),
                ("10.0.0.2:80".into(), 1, false)
            ],
            "{host}"
        );
    }

    let r = h
        .api(
            Method::PUT,
            "/entries.json",
            Some(json!([
                {"host": "d.example", "backends": [
                    {"backend": "10.0.0.4:80"}, {"backend": "10.0.0.5:80", "backup": true}]},
                {"host": "e.example", "backend": "10.0.0.6:80"}
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h.api(Method::GET, "/entries.json", None).await;
    assert_eq!(
        r.json(),
        json!([
            {"host": "d.example", "backends": [
                {"backend": "10.0.0.4:80", "weight": 1},
                {"backend": "10.0.0.5:80", "weight": 1, "backup": true}]},
            {"host": "e.example", "backend": "10.0.0.6:80"}
        ])
    );
}

#[tokio::test]
async fn a_bad_set_is_refused_with_its_reason_and_nothing_changes() {
    let h = RouterHarness::new();
    let m = |b: &str| json!({"backend": b});
    let nine: Vec<Value> = (1..=9).map(|i| m(&format!("10.0.0.{i}:80"))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "empty"),
        (json!(nine), "limit is 8"),
        (json!([{"backend": "10.0.0.1:80", "weight": 0}]), "weight 0"),
        (
            json!([{"backend": "10.0.0.1:80", "weight": 101}]),
            "weight 101",
        ),
        (
            json!([{"backend": "10.0.0.1:80", "weight": 100000}]),
            "weight 100000",
        ),
        (
            json!([{"backend": "10.0.0.1:80", "backup": true}]),
            "backup",
        ),
        (json!([m("10.0.0.1:80"), m("10.0.0.1:80")]), "10.0.0.1:80"),
        (
            json!([m("10.0.0.1:80"), m("http://10.0.0.2:80")]),
            "backends[1]",
        ),
    ];
    for (backends, reason) in cases {
        let body = json!({"host": "a.example", "backends": backends});
        let r = h
            .api(Method::POST, "/entries.json", Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_backend", "{body}");
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(reason), "{body}: {message}");
        let batch = json!({"upsert": [{"host": "b.example", "backend": "10.0.0.1:80"}, body]});
        let r = h.api(Method::PATCH, "/entries.json", Some(batch)).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    for body in [
        json!({"host": "a.example"}),
        json!({"host": "a.example", "backend": "10.0.0.1:80", "backends": [m("10.0.0.2:80")]}),
    ] {
        let r = h
            .api(Method::POST, "/entries.json", Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_body", "{body}");
    }
    let r = h
        .api(
            Method::POST,
            "/entries.json",
            Some(json!({"host": "a.example", "backends": [{"backend": "10.0.0.1:80", "port": 1}]})),
        )
        .await;
    assert_eq!(r.json()["error"]["code"], "invalid_body", "{}", r.text());
    assert!(h.list().await.is_empty());
    assert_eq!(
        h.call(
            Method::GET,
            "/entries.json",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            ""
        )
        .await
        .json(),
        json!([])
    );
}

#[tokio::test]
async fn the_ip_only_mode_refuses_a_set_with_a_name() {
    let h = RouterHarness::with(|s| s.ip_backends_only = true);
    let body = json!({"host": "a.example", "backends": [
        {"backend": "10.0.0.1:80"}, {"backend": "web.internal:80"}]});
    let r = h.api(Method::POST, "/entries.json", Some(body)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid_backend");
    assert!(h.list().await.is_empty());
}
