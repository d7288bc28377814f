//! The key layout in etcd, under one versioned prefix `P` (default `/set-backend/v1/`):
//!
//! | key                               | value                                          |
//! |-----------------------------------|------------------------------------------------|
//! | `P` `data/generation`             | the current generation's id (absent: `0`)      |
//! | `P` `data/g/<gen>/<bb>/<host>`    | the host's canonical entry text                |
//! | `P` `meta/replace-lock`           | the node running a replace-all (under its lease) |
//! | `P` `meta/staging`                | the generation a replace-all is filling        |
//! | `P` `meta/retired`                | a replaced generation still being deleted      |
//! | `P` `nodes/<node>`                | the node's applied revision (under its lease)  |
//!
//! `<bb>` is the host's bucket, two hex digits of a hash of the host: reading a generation
//! bucket by bucket stays fast at a million hosts, where paging one prefix does not (etcd 3.4),
//! and deleting one generation goes in pieces of a 256th. Followers watch `P` `data/` only.

/// How many buckets a generation's hosts are spread over.
pub const BUCKETS: u16 = 256;

/// The generation id when the generation key is absent (a fresh prefix).
pub const FIRST_GENERATION: &str = "0";

/// The keys of one prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The prefix, ending in `/`.
    prefix: String,
}

/// What a key under `P` `data/` is.
#[derive(Debug, PartialEq, Eq)]
pub enum DataKey<'a> {
    /// The generation key.
    Generation,
    /// A host of generation `generation`.
    Host { generation: &'a str, host: &'a str },
    /// Anything else (ignored).
    Other,
}

impl Layout {
    /// The layout under `prefix` (a `/` is added if it does not end in one).
    pub fn new(prefix: &str) -> Layout {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Layout { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What followers watch: the generation key and every generation's hosts.
    pub fn data(&self) -> String {
        format!("{}data/", self.prefix)
    }

    pub fn generation(&self) -> String {
        format!("{}data/generation", self.prefix)
    }

    /// Every host of `generation`.
    pub fn hosts(&self, generation: &str) -> String {
        format!("{}data/g/{generation}/", self.prefix)
    }

    /// The hosts of `generation` in `bucket`.
    pub fn bucket(&self, generation: &str, bucket: u16) -> String {
        format!("{}data/g/{generation}/{bucket:02x}/", self.prefix)
    }

    /// The key of `host` in `generation`.
    pub fn host(&self, generation: &str, host: &str) -> String {
        format!("{}{host}", self.bucket(generation, bucket_of(host)))
    }

    pub fn replace_lock(&self) -> String {
        format!("{}meta/replace-lock", self.prefix)
    }

    pub fn staging(&self) -> String {
        format!("{}meta/staging", self.prefix)
    }

    pub fn retired(&self) -> String {
        format!("{}meta/retired", self.prefix)
    }

    /// Every node's registration.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}nodes/{name}", self.prefix)
    }

    /// What a key under [`Layout::data`] is.
    pub fn parse<'a>(&self, key: &'a str) -> DataKey<'a> {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|k| k.strip_prefix("data/"))
        else {
            return DataKey::Other;
        };
        if rest == "generation" {
            return DataKey::Generation;
        }
        let Some(rest) = rest.strip_prefix("g/") else {
            return DataKey::Other;
        };
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(generation), Some(b), Some(host))
                if b.len() == 2 && !host.is_empty() && !generation.is_empty() =>
            {
                DataKey::Host { generation, host }
            }
            _ => DataKey::Other,
        }
    }
}

/// The bucket of `host`: FNV-1a over its bytes, folded to [`BUCKETS`]. Stable across versions
/// (it is part of the key layout).
pub fn bucket_of(host: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in host.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h ^ (h >> 16)) % u32::from(BUCKETS)) as u16
}

/// The end of the range of every key starting with `prefix` (etcd's "prefix" range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let l = Layout::new("/sb/v1");
        assert_eq!(l.generation(), "/sb/v1/data/generation");
        assert_eq!(l.parse(&l.generation()), DataKey::Generation);
        let k = l.host("42", "*.example.com");
        assert!(k.starts_with("/sb/v1/data/g/42/"), "{k}");
        assert_eq!(
            l.parse(&k),
            DataKey::Host {
                generation: "42",
                host: "*.example.com"
            }
        );
        assert_eq!(l.parse("/sb/v1/nodes/a"), DataKey::Other);
        assert_eq!(l.parse("/sb/v1/data/g/42/"), DataKey::Other);
        assert_eq!(l.parse("/other/data/generation"), DataKey::Other);
    }

    #[test]
    fn buckets_spread_and_stay_stable() {
        // Part of the on-etcd layout: a change here would strand every stored host.
        assert_eq!(bucket_of("example.com"), 58);
        assert_eq!(bucket_of("*.example.com"), 244);
        assert_eq!(bucket_of("*"), 49);
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let b = bucket_of(&format!("h{i}.example.com"));
            assert!(b < BUCKETS);
            seen.insert(b);
        }
        assert_eq!(seen.len(), BUCKETS as usize);
        assert_eq!(prefix_end("a/"), b"a0".to_vec());
    }
}
