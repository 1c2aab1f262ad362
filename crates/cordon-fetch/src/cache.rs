//! The on-disk cache: one file per request URL, `{dir}/{sha256(url) hex}.entry`, holding one line of
//! JSON metadata (`url`, `fetched_at` in Unix seconds, response `headers`), a newline, then the raw
//! response body. Entries are written atomically (temporary file, then rename), so a reader sees a
//! whole entry or none; an entry whose recorded URL is not the one asked for is ignored.

use crate::http::Response;
use crate::{write_atomic, FetchError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Room for the metadata line on top of the body limit when reading an entry.
const META_LIMIT: usize = 256 * 1024;

#[derive(Serialize, Deserialize)]
struct Meta {
    url: String,
    fetched_at: u64,
    headers: BTreeMap<String, String>,
}

pub(crate) struct Cache {
    dir: PathBuf,
}

pub(crate) struct Entry {
    pub response: Response,
    fetched_at: u64,
}

impl Entry {
    /// How long ago the entry was fetched; `None` when that is in the future (clock moved back).
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        now.checked_sub(self.fetched_at).map(Duration::from_secs)
    }
}

impl Cache {
    pub fn new(dir: &Path) -> Cache {
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, url: &str) -> PathBuf {
        self.dir
            .join(format!("{}.entry", hex::encode(Sha256::digest(url))))
    }

    fn error(&self, path: &Path, reason: impl Into<String>) -> FetchError {
        FetchError::Cache {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// The entry for `url`: `Ok(None)` when there is none; an error when it is unreadable or
    /// malformed (the caller decides whether to fetch again).
    pub fn get(&self, url: &str, body_limit: usize) -> Result<Option<Entry>, FetchError> {
        let path = self.path(url);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(&path, e.to_string())),
        };
        let limit = body_limit.saturating_add(META_LIMIT);
        let mut bytes = Vec::new();
        file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(&path, e.to_string()))?;
        if bytes.len() > limit {
            return Err(self.error(&path, format!("larger than {limit} bytes")));
        }
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.error(&path, "no metadata line"))?;
        let meta: Meta = serde_json::from_slice(&bytes[..newline])
            .map_err(|e| self.error(&path, format!("metadata: {e}")))?;
        if meta.url != url {
            return Err(self.error(&path, format!("entry is for {}, not {url}", meta.url)));
        }
        let body = bytes[newline + 1..].to_vec();
        if body.len() > body_limit {
            return Err(self.error(&path, format!("body larger than {body_limit} bytes")));
        }
        Ok(Some(Entry {
            response: Response {
                url: meta.url,
                headers: meta.headers,
                body,
            },
            fetched_at: meta.fetched_at,
        }))
    }

    /// Stores a response fetched at `now`.
    pub fn put(&self, response: &Response, now: SystemTime) -> Result<(), FetchError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.error(&self.dir, e.to_string()))?;
        let path = self.path(&response.url);
        let meta = Meta {
            url: response.url.clone(),
            fetched_at: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            headers: response.headers.clone(),
        };
        let mut bytes = serde_json::to_vec(&meta).map_err(|e| self.error(&path, e.to_string()))?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&response.body);
        write_atomic(&path, &bytes).map_err(|e| self.error(&path, e.to_string()))
    }
}
