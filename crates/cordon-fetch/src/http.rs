//! GET with a size limit and timeouts, through the cache.

use crate::cache::Cache;
use crate::{Clock, FetchError, Options, Source};
use std::collections::BTreeMap;
use std::time::Duration;

/// A successful (2xx) response: its URL, headers (lower-case names; values that are not visible
/// ASCII are dropped) and body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How long a cached answer stays good.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Freshness {
    /// Never changes (a VCEK for a given chip and TCB).
    Forever,
    /// Changes (CRLs, TCB info, QE identity): [`Options::max_age`].
    MaxAge,
}

pub(crate) struct Http {
    client: reqwest::Client,
    cache: Option<Cache>,
    offline: bool,
    max_age: Duration,
    timeout: Duration,
    limit: usize,
    clock: Clock,
}

impl Http {
    pub fn new(opts: &Options) -> Result<Http, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("cordon-fetch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(Http {
            client,
            cache: opts.cache_dir.as_deref().map(Cache::new),
            offline: opts.offline,
            max_age: opts.max_age,
            timeout: opts.timeout,
            limit: opts.max_response_bytes,
            clock: opts.clock.clone(),
        })
    }

    /// GETs `url`, from the cache when it holds a usable answer, and returns what `check` makes of
    /// it. Only answers that `check` accepts are cached; a cached answer it refuses is fetched
    /// again (or, offline, is an error).
    pub async fn get<T>(
        &self,
        url: &str,
        freshness: Freshness,
        sources: &mut Vec<Source>,
        check: impl Fn(&Response) -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        if let Some(cache) = &self.cache {
            let unusable = |reason: String| FetchError::BadCacheEntry {
                url: url.to_string(),
                reason,
            };
            match cache.get(url, self.limit) {
                Ok(Some(entry)) => {
                    let fresh = self.offline
                        || match freshness {
                            Freshness::Forever => true,
                            Freshness::MaxAge => entry
                                .age((self.clock)())
                                .is_some_and(|age| age <= self.max_age),
                        };
                    if fresh {
                        match check(&entry.response) {
                            Ok(value) => {
                                sources.push(Source {
                                    url: url.to_string(),
                                    from_cache: true,
                                });
                                return Ok(value);
                            }
                            Err(e) if self.offline => return Err(unusable(e.to_string())),
                            Err(_) => {}
                        }
                    }
                }
                Ok(None) => {}
                Err(e) if self.offline => return Err(unusable(e.to_string())),
                Err(_) => {}
            }
        }
        if self.offline {
            return Err(FetchError::NotCached {
                url: url.to_string(),
                cache: self.cache.as_ref().map(|c| c.dir().to_path_buf()),
            });
        }
        let response = self.network(url).await?;
        let value = check(&response)?;
        if let Some(cache) = &self.cache {
            cache.put(&response, (self.clock)())?;
        }
        sources.push(Source {
            url: url.to_string(),
            from_cache: false,
        });
        Ok(value)
    }

    async fn network(&self, url: &str) -> Result<Response, FetchError> {
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.to_string(),
            reason: if e.is_timeout() {
                format!("timed out (limit {:?})", self.timeout)
            } else {
                describe(&e.without_url())
            },
        };
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit: self.limit,
        };
        let mut response = self.client.get(url).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Http {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > u64::try_from(self.limit).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    name.as_str().to_ascii_lowercase(),
                    value.to_str().ok()?.to_string(),
                ))
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len().saturating_add(chunk.len()) > self.limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            url: url.to_string(),
            headers,
            body,
        })
    }
}

/// An error with its causes, `a: b: c`.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
