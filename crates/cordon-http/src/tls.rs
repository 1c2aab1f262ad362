//! TLS for Cordon's servers (rustls with the `ring` provider, the one reqwest already uses).
//!
//! TLS is defence in depth on the wire: it hides metadata (paths, sizes, timing per connection)
//! from the network. It is never what keeps a key or a request confidential: those travel
//! HPKE-encrypted to attested keys, or sealed to the KBS's identity key, whatever the transport.
//! The server's TLS key is the operator's (not bound to any evidence), so a client trusts it for
//! the transport only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// Why a TLS certificate, key or configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: no PEM CERTIFICATE found")]
    NoCertificate { what: String },
    #[error("{what}: malformed PEM: {reason}")]
    Pem { what: String, reason: String },
    #[error("{what}: no private key found (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoKey { what: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

/// Every certificate (PEM `CERTIFICATE` sections, in order) in `pem`; other sections are ignored.
pub(crate) fn certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

pub(crate) fn read(path: &Path, what: &'static str) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// The crypto provider of every TLS configuration Cordon makes (servers and clients alike).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS configuration: its certificate chain and key. Cloning shares it.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 RSA or
    /// SEC1 EC). TLS 1.3 and 1.2 with rustls's safe defaults, HTTP/1.1 by ALPN, no client
    /// certificates. The key must match the leaf certificate.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, TlsError> {
        Self::build(cert_chain_pem, "TLS certificate", key_pem, "TLS key")
    }

    /// [`ServerTls::from_pem`] with both read from files.
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let certs = read(cert_chain, "TLS certificate")?;
        let key_pem = read(key, "TLS key")?;
        Self::build(
            &certs,
            &format!("TLS certificate {}", cert_chain.display()),
            &key_pem,
            &format!("TLS key {}", key.display()),
        )
    }

    fn build(
        cert_chain_pem: &[u8],
        cert_what: &str,
        key_pem: &[u8],
        key_what: &str,
    ) -> Result<ServerTls, TlsError> {
        let certs = certificates(cert_chain_pem, cert_what)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
                what: key_what.to_string(),
            },
            e => TlsError::Pem {
                what: key_what.to_string(),
                reason: e.to_string(),
            },
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid {
                what: "TLS configuration".into(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Invalid {
                what: format!("{cert_what} with {key_what}"),
                reason: e.to_string(),
            })?;
        // The serving loop speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// A configuration made elsewhere (it should offer ALPN `http/1.1` or none).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> ServerTls {
        ServerTls { config }
    }

    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }
}
