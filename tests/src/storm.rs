//! [`write_storm`]: a client writing to the writer's API non-stop, the writes it got
//! acknowledged recorded in an [`Acked`], for the tests that kill the writer meanwhile.

use std::path::PathBuf;

use serde_json::json;

use crate::{unix_request, Acked, Rng, TOKEN};

/// Upserts, deletes and batches of up to 5 hosts on 60 churn hosts (`churn-N.example`), sent
/// to the writer's socket one after the other until it stops answering, recorded in `m`.
pub fn write_storm(socket: PathBuf, seed: u64, mut m: Acked) -> Acked {
    let mut rng = Rng::new(seed);
    let host = |i: u64| format!("churn-{i}.example");
    let mut n = 0u64;
    loop {
        n += 1;
        let backend = |rng: &mut Rng| {
            format!(
                "10.9.{}.{}:{}",
                n % 250,
                rng.below(250),
                1 + rng.below(60000)
            )
        };
        let (method, path, body, changes) = match rng.below(10) {
            0..=5 => {
                let (h, b) = (host(rng.below(60)), backend(&mut rng));
                let body = json!({"host": h, "backend": b}).to_string();
                (
                    "POST",
                    "/entries.json".to_string(),
                    Some(body),
                    vec![(h, Some(b))],
                )
            }
            6..=7 => {
                let h = host(rng.below(60));
                (
                    "DELETE",
                    format!("/entries/{h}.json"),
                    None,
                    vec![(h, None)],
                )
            }
            _ => {
                let start = rng.below(55);
                let (mut upsert, mut delete, mut changes) = (vec![], vec![], vec![]);
                for i in start..start + 5 {
                    if rng.below(4) == 0 {
                        delete.push(host(i));
                        changes.push((host(i), None));
                    } else {
                        let b = backend(&mut rng);
                        upsert.push(json!({"host": host(i), "backend": b}));
                        changes.push((host(i), Some(b)));
                    }
                }
                let body = json!({"upsert": upsert, "delete": delete}).to_string();
                ("PATCH", "/entries.json".to_string(), Some(body), changes)
            }
        };
        m.send(changes);
        let auth = format!("Bearer {TOKEN}");
        match unix_request(
            &socket,
            method,
            &path,
            &[("Authorization", &auth)],
            body.as_deref(),
        ) {
            Ok(r) if r.status < 300 || (r.status == 404 && method == "DELETE") => m.acknowledged(),
            Ok(r) => panic!("{} {}: unexpected answer {r:?}", method, path),
            Err(_) => return m,
        }
    }
}
