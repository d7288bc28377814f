//! The types the server, the command line and the client share: what the API reads and
//! writes, as JSON. No axum, no store: a client needs only these.

use serde::{Deserialize, Serialize};

/// One entry, as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The host name (stored lowercase, without port or trailing dot, as A-labels).
    pub host: String,
    /// Where to send its requests: `host:port`, `a.b.c.d:port` or `[v6]:port`.
    pub backend: String,
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
