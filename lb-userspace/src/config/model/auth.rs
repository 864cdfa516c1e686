//! The validated settings of the authentication and authorization filters.

use std::path::PathBuf;

/// `api_key` settings: the keys (as SHA-256 hashes) and where a request presents one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySpec {
    /// The keys file the keys were read from (named in logs).
    pub file: PathBuf,
    /// The keys: `(name, SHA-256 of the key)`, in file order.
    pub keys: Vec<(String, [u8; 32])>,
    /// The request header carrying the key (lower case), if any.
    pub header: Option<String>,
    /// The query parameter carrying the key, if any.
    pub query: Option<String>,
}

/// How `api_key` keeps a key: its SHA-256.
pub fn key_hash(key: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
