//! Backend sets: what an entry routes to. A set holds 1 to [`MAX_MEMBERS`] backends, each with
//! a weight (1 to [`MAX_WEIGHT`]) and a backup flag; at least one member is a primary (not a
//! backup) and no backend appears twice. The writer validates a set here before it is stored;
//! the table keeps it in one record (`docs/FORMAT.md`, §6), replaced whole.

use crate::format::{addr_words, words_for, ADDR_NONE, ADDR_V4, ADDR_V6, RECORD_FIXED_WORDS};
use crate::host::Backend;
use crate::record::{self, MemberRef};
use std::fmt;
use std::net::SocketAddr;

/// The most members a set may have.
pub const MAX_MEMBERS: usize = 8;
/// The largest weight of a member; the smallest is 1.
pub const MAX_WEIGHT: u8 = 100;

/// One backend of a set, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetMember {
    pub backend: Backend,
    /// 1 to [`MAX_WEIGHT`]: the member's share of the primaries' (or the backups') requests.
    pub weight: u8,
    /// Used only when no primary can be.
    pub backup: bool,
}

impl SetMember {
    /// A primary of weight 1.
    pub fn primary(backend: Backend) -> SetMember {
        SetMember {
            backend,
            weight: 1,
            backup: false,
        }
    }
}

/// A validated backend set, its members in the order they were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSet {
    members: Vec<SetMember>,
}

/// Why a set was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetError {
    Empty,
    TooMany {
        len: usize,
    },
    /// The weight of member `index` is outside 1..=[`MAX_WEIGHT`].
    BadWeight {
        index: usize,
        weight: u64,
    },
    /// Every member is a backup.
    NoPrimary,
    /// Member `index` repeats an earlier member's backend.
    Duplicate {
        index: usize,
        backend: String,
    },
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Empty => f.write_str("backends is empty; give at least one backend"),
            SetError::TooMany { len } => {
                write!(f, "backends has {len} members, the limit is {MAX_MEMBERS}")
            }
            SetError::BadWeight { index, weight } => write!(
                f,
                "backends[{index}]: weight {weight} is out of range (1 to {MAX_WEIGHT})"
            ),
            SetError::NoPrimary => {
                f.write_str("backends has only backups; at least one member must not be a backup")
            }
            SetError::Duplicate { index, backend } => {
                write!(f, "backends[{index}]: {backend:?} appears twice")
            }
        }
    }
}

impl std::error::Error for SetError {}

impl BackendSet {
    /// A set of one primary: what `"backend": "…"` means.
    pub fn one(backend: Backend) -> BackendSet {
        BackendSet {
            members: vec![SetMember::primary(backend)],
        }
    }

    /// Validates `members`: 1 to [`MAX_MEMBERS`], weights in range, a primary, no repeats.
    pub fn new(members: Vec<SetMember>) -> Result<BackendSet, SetError> {
        if members.is_empty() {
            return Err(SetError::Empty);
        }
        if members.len() > MAX_MEMBERS {
            return Err(SetError::TooMany { len: members.len() });
        }
        for (index, m) in members.iter().enumerate() {
            if m.weight == 0 || m.weight > MAX_WEIGHT {
                return Err(SetError::BadWeight {
                    index,
                    weight: m.weight.into(),
                });
            }
            if members[..index].iter().any(|o| o.backend == m.backend) {
                return Err(SetError::Duplicate {
                    index,
                    backend: m.backend.to_string(),
                });
            }
        }
        if members.iter().all(|m| m.backup) {
            return Err(SetError::NoPrimary);
        }
        Ok(BackendSet { members })
    }

    /// The members, in the order given.
    pub fn members(&self) -> &[SetMember] {
        &self.members
    }

    /// The first member's backend: what a one-member set is.
    pub fn first(&self) -> &Backend {
        &self.members[0].backend
    }

    /// The members in the table's order: the primaries, then the backups, each in the order
    /// given (a record's first member is always a primary, `docs/FORMAT.md` §6).
    pub fn table_order(&self) -> impl Iterator<Item = &SetMember> {
        let primaries = self.members.iter().filter(|m| !m.backup);
        primaries.chain(self.members.iter().filter(|m| m.backup))
    }
}

/// What an entry routes to, as the table writer stores it: a [`Backend`] (a set of one) or a
/// [`BackendSet`].
pub trait Routing {
    /// Encodes the record of `key` (hash `hash`) routed here, after its sequence word.
    #[doc(hidden)]
    fn encode_record(&self, buf: &mut Vec<u64>, hash: u64, key: &[u8]);
    /// The words of that record, sequence word included.
    fn record_words(&self, key_len: usize) -> usize;
}

/// Address words of a member.
fn addr_words_of(addr: Option<SocketAddr>) -> usize {
    addr_words(match addr {
        Some(SocketAddr::V4(_)) => ADDR_V4,
        Some(SocketAddr::V6(_)) => ADDR_V6,
        None => ADDR_NONE,
    })
}

/// Words of a member's value and address.
fn member_words(b: &Backend) -> usize {
    words_for(b.as_str().len()) + addr_words_of(b.addr())
}

impl Routing for Backend {
    fn encode_record(&self, buf: &mut Vec<u64>, hash: u64, key: &[u8]) {
        record::encode(buf, hash, key, self.as_str().as_bytes(), self.addr());
    }

    fn record_words(&self, key_len: usize) -> usize {
        RECORD_FIXED_WORDS + words_for(key_len) + member_words(self)
    }
}

impl Routing for BackendSet {
    fn encode_record(&self, buf: &mut Vec<u64>, hash: u64, key: &[u8]) {
        let members: Vec<MemberRef> = self
            .table_order()
            .map(|m| MemberRef {
                text: m.backend.as_str().as_bytes(),
                addr: m.backend.addr(),
                weight: m.weight,
                backup: m.backup,
            })
            .collect();
        record::encode_set(buf, hash, key, &members);
    }

    fn record_words(&self, key_len: usize) -> usize {
        let n = self.members.len();
        // A set of two or more adds the set word and a descriptor per further member.
        let set_words = if n > 1 { n } else { 0 };
        let values: usize = self.members.iter().map(|m| member_words(&m.backend)).sum();
        RECORD_FIXED_WORDS + words_for(key_len) + values + set_words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(b: &str, weight: u8, backup: bool) -> SetMember {
        SetMember {
            backend: Backend::parse(b).unwrap(),
            weight,
            backup,
        }
    }

    #[test]
    fn sets_are_validated() {
        assert_eq!(BackendSet::new(vec![]), Err(SetError::Empty));
        let many = (0..=MAX_MEMBERS)
            .map(|i| m(&format!("10.0.0.{i}:80"), 1, false))
            .collect();
        assert_eq!(
            BackendSet::new(many),
            Err(SetError::TooMany {
                len: MAX_MEMBERS + 1
            })
        );
        for w in [0, MAX_WEIGHT + 1] {
            let set = BackendSet::new(vec![m("a:1", 1, false), m("b:1", w, false)]);
            assert_eq!(
                set,
                Err(SetError::BadWeight {
                    index: 1,
                    weight: w.into()
                })
            );
        }
        assert_eq!(
            BackendSet::new(vec![m("a:1", 1, true)]),
            Err(SetError::NoPrimary)
        );
        assert!(matches!(
            BackendSet::new(vec![m("a:1", 1, false), m("A:1", 2, true)]),
            Err(SetError::Duplicate { index: 1, .. })
        ));
        let set = BackendSet::new(vec![
            m("b:1", 1, true),
            m("a:1", 3, false),
            m("c:1", 1, false),
        ])
        .unwrap();
        let order: Vec<&str> = set.table_order().map(|m| m.backend.as_str()).collect();
        assert_eq!(order, ["a:1", "c:1", "b:1"]);
    }
}
