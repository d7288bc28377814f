//! What a host routes to, and the one string the store keeps for it. An entry is written as
//! `"backend": "…"` (a set of one) or `"backends": [{"backend", "weight", "backup"}, …]`; the
//! store, the table's rebuilds and fleet mode's etcd values all hold the canonical string of
//! [`encode`], read back by [`decode`]:
//!
//! - the single form is the backend's canonical text, as before sets existed
//!   (`10.0.0.7:3000`), so stores written then stay valid;
//! - the set form is its members in the order written, joined by `,`, each
//!   `<backend> weight=<n>` followed by ` backup` for a backup
//!   (`10.0.0.1:80 weight=3,10.0.0.2:80 weight=1,10.0.0.3:80 weight=1 backup`). A backend never
//!   holds a space or a comma, so the forms cannot be confused, and a set of one keeps its form.

use shm_layout::{Backend, BackendError, BackendSet, Routing, SetError, SetMember};
use std::fmt;

/// A validated route: the backend set and the form it was written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    set: BackendSet,
    /// Written as `"backends": […]` (true) or `"backend": "…"` (false).
    listed: bool,
    /// Its canonical string ([`encode`]), made once: the store borrows it for every write.
    text: String,
}

/// Why a stored string is not a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    Backend(BackendError),
    Set(SetError),
    /// A set member that is not `<backend> weight=<n>[ backup]`.
    Member(String),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Backend(e) => write!(f, "{e}"),
            RouteError::Set(e) => write!(f, "{e}"),
            RouteError::Member(m) => write!(f, "not a set member: {m:?}"),
        }
    }
}

impl std::error::Error for RouteError {}

impl Route {
    /// `"backend": "…"`.
    pub fn one(backend: Backend) -> Route {
        Route {
            text: backend.to_string(),
            set: BackendSet::one(backend),
            listed: false,
        }
    }

    /// `"backends": […]`.
    pub fn listed(set: BackendSet) -> Route {
        let text = set
            .members()
            .iter()
            .map(|m| {
                let backup = if m.backup { " backup" } else { "" };
                format!("{} weight={}{backup}", m.backend, m.weight)
            })
            .collect::<Vec<_>>()
            .join(",");
        Route {
            set,
            listed: true,
            text,
        }
    }

    /// Its canonical string, the one [`encode`] gives.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn set(&self) -> &BackendSet {
        &self.set
    }

    /// Whether it was written as a list (`"backends"`).
    pub fn is_listed(&self) -> bool {
        self.listed
    }
}

impl Routing for Route {
    fn encode_record(&self, buf: &mut Vec<u64>, hash: u64, key: &[u8]) {
        self.set.encode_record(buf, hash, key)
    }

    fn record_words(&self, key_len: usize) -> usize {
        self.set.record_words(key_len)
    }
}

/// The canonical string of `route` (see the module docs).
pub fn encode(route: &Route) -> String {
    route.text.clone()
}

/// The route whose canonical string is `s`, validated as when it was written.
pub fn decode(s: &str) -> Result<Route, RouteError> {
    if !s.contains(' ') {
        return Backend::parse(s)
            .map(Route::one)
            .map_err(RouteError::Backend);
    }
    let members = s
        .split(',')
        .map(|m| {
            let bad = || RouteError::Member(m.to_owned());
            let mut parts = m.split(' ');
            let backend =
                Backend::parse(parts.next().ok_or_else(bad)?).map_err(RouteError::Backend)?;
            let weight = parts
                .next()
                .and_then(|w| w.strip_prefix("weight="))
                .and_then(|w| w.parse::<u8>().ok())
                .ok_or_else(bad)?;
            let backup = match (parts.next(), parts.next()) {
                (None, _) => false,
                (Some("backup"), None) => true,
                _ => return Err(bad()),
            };
            Ok(SetMember {
                backend,
                weight,
                backup,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    BackendSet::new(members)
        .map(Route::listed)
        .map_err(RouteError::Set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(b: &str, weight: u8, backup: bool) -> SetMember {
        SetMember {
            backend: Backend::parse(b).unwrap(),
            weight,
            backup,
        }
    }

    #[test]
    fn the_forms_have_their_strings() {
        let one = Route::one(Backend::parse("10.0.0.7:3000").unwrap());
        assert_eq!(encode(&one), "10.0.0.7:3000");
        let listed_one = Route::listed(BackendSet::one(Backend::parse("10.0.0.7:3000").unwrap()));
        assert_eq!(encode(&listed_one), "10.0.0.7:3000 weight=1");
        let set = Route::listed(
            BackendSet::new(vec![
                member("10.0.0.1:80", 3, false),
                member("[::1]:80", 1, true),
                member("name.example:8080", 100, false),
            ])
            .unwrap(),
        );
        let s = "10.0.0.1:80 weight=3,[::1]:80 weight=1 backup,name.example:8080 weight=100";
        assert_eq!(encode(&set), s);
        for r in [one, listed_one, set] {
            assert_eq!(decode(&encode(&r)), Ok(r));
        }
    }

    #[test]
    fn malformed_strings_are_refused() {
        for s in [
            "",
            "10.0.0.1",
            "10.0.0.1:80 ",
            "10.0.0.1:80 weight=0",
            "10.0.0.1:80 weight=101",
            "10.0.0.1:80 weight=1 backup",
            "10.0.0.1:80 weight=1 spare",
            "10.0.0.1:80 weight=1 backup extra",
            "10.0.0.1:80 weight=1,",
            "10.0.0.1:80 weight=1,10.0.0.1:80 weight=2",
            "10.0.0.1:80 w=1",
        ] {
            assert!(decode(s).is_err(), "{s:?} accepted");
        }
    }

    proptest! {
        /// Every valid route survives its string.
        #[test]
        fn every_route_survives_its_string(
            members in proptest::collection::vec((0u8..20, 1u8..=100, any::<bool>()), 1..=8),
            listed in any::<bool>(),
        ) {
            let mut members: Vec<SetMember> = members
                .into_iter()
                .map(|(i, w, b)| member(&format!("10.0.0.{i}:80"), w, b))
                .collect();
            members.dedup_by(|a, b| a.backend == b.backend);
            members.sort_by(|a, b| a.backend.as_str().cmp(b.backend.as_str()));
            members.dedup_by(|a, b| a.backend == b.backend);
            members[0].backup = false;
            let route = if listed {
                Route::listed(BackendSet::new(members).unwrap())
            } else {
                Route::one(members.swap_remove(0).backend)
            };
            prop_assert_eq!(decode(&encode(&route)), Ok(route));
        }
    }
}
