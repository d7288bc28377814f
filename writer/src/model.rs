//! The types the server, the command line and the client share: what the API reads and
//! writes, as JSON. No axum, no store: a client needs only these.

use serde::{Deserialize, Serialize};

/// One entry, as the API reads and writes it: exactly one of `backend` (a set of one, the
/// original form) and `backends` (a backend set) is given, and answers use the form written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The host name (stored lowercase, without port or trailing dot, as A-labels).
    pub host: String,
    /// Where to send its requests: `host:port`, `a.b.c.d:port` or `[v6]:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Several backends with weights and backups (upstream mode fails over among them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<Member>>,
}

impl Entry {
    /// An entry in the original form: one backend.
    pub fn one(host: impl Into<String>, backend: impl Into<String>) -> Entry {
        Entry {
            host: host.into(),
            backend: Some(backend.into()),
            backends: None,
        }
    }
}

impl Entry {
    /// Its route as one line, in nginx's `server` syntax for sets:
    /// `10.0.0.1:80 weight=3 10.0.0.2:80 10.0.0.3:80 backup` (what the CLI prints and reads).
    pub fn route_text(&self) -> String {
        match (&self.backend, &self.backends) {
            (Some(b), _) => b.clone(),
            (None, Some(list)) => list
                .iter()
                .map(|m| {
                    let mut t = m.backend.clone();
                    if m.weight != 1 {
                        t.push_str(&format!(" weight={}", m.weight));
                    }
                    if m.backup {
                        t.push_str(" backup");
                    }
                    t
                })
                .collect::<Vec<_>>()
                .join(" "),
            (None, None) => String::new(),
        }
    }

    /// The entry of `words` in [`Entry::route_text`]'s syntax: one backend is the `backend`
    /// form; several, or any `weight=`/`backup`, the `backends` form.
    pub fn from_words(host: String, words: &[String]) -> Result<Entry, String> {
        if let [one] = words {
            if !one.starts_with("weight=") && one != "backup" {
                return Ok(Entry::one(host, one.clone()));
            }
        }
        let mut list: Vec<Member> = Vec::new();
        for w in words {
            let last = list.last_mut();
            match (w.strip_prefix("weight="), w.as_str(), last) {
                (Some(n), _, Some(m)) => {
                    m.weight = n.parse().map_err(|_| format!("not a weight: {w:?}"))?
                }
                (None, "backup", Some(m)) => m.backup = true,
                (Some(_), _, None) | (None, "backup", None) => {
                    return Err(format!("{w:?} must follow a backend"))
                }
                _ => list.push(Member {
                    backend: w.clone(),
                    weight: 1,
                    backup: false,
                }),
            }
        }
        Ok(Entry {
            host,
            backend: None,
            backends: Some(list),
        })
    }
}

/// One member of `backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// `host:port`, `a.b.c.d:port` or `[v6]:port`, as `backend`.
    pub backend: String,
    /// 1 to 100: its share of the requests among the primaries (or among the backups).
    #[serde(default = "one")]
    pub weight: u64,
    /// Used only when no primary can be.
    #[serde(default, skip_serializing_if = "is_false")]
    pub backup: bool,
}

fn one() -> u64 {
    1
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The body of `PATCH /entries.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Entries to create or update.
    #[serde(default)]
    pub upsert: Vec<Entry>,
    /// Hosts to delete; absent hosts are counted, not refused.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// What a committed batch did, per kind of change: the answer to `PATCH /entries.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchCounts {
    /// Upserts of hosts that were not stored.
    pub created: u64,
    /// Upserts of hosts that were stored.
    pub updated: u64,
    /// Deletes of stored hosts.
    pub deleted: u64,
    /// Deletes of hosts that were not stored (not an error).
    pub absent: u64,
}

/// The answer to `PUT /entries.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceResult {
    /// Entries the store holds afterwards.
    pub entries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn the_command_line_form_reads_back_what_it_prints() {
        let one = Entry::from_words("a".into(), &words("10.0.0.1:80")).unwrap();
        assert_eq!(one, Entry::one("a", "10.0.0.1:80"));
        assert_eq!(one.route_text(), "10.0.0.1:80");
        let text = "10.0.0.1:80 weight=3 10.0.0.2:80 10.0.0.3:80 backup";
        let set = Entry::from_words("a".into(), &words(text)).unwrap();
        let list = set.backends.clone().unwrap();
        assert_eq!(set.backend, None);
        assert_eq!(
            list.iter()
                .map(|m| (m.backend.as_str(), m.weight, m.backup))
                .collect::<Vec<_>>(),
            [
                ("10.0.0.1:80", 3, false),
                ("10.0.0.2:80", 1, false),
                ("10.0.0.3:80", 1, true)
            ]
        );
        assert_eq!(set.route_text(), text);
        // A set of one with a weight stays a set.
        let weighted = Entry::from_words("a".into(), &words("10.0.0.1:80 weight=2")).unwrap();
        assert!(weighted.backends.is_some());
        for bad in ["weight=2 10.0.0.1:80", "backup", "10.0.0.1:80 weight=x"] {
            assert!(Entry::from_words("a".into(), &words(bad)).is_err(), "{bad}");
        }
    }
}
