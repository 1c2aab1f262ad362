//! How Cordon's HTTP clients (to the KBS, to a runtime) trust TLS servers: the built-in web PKI
//! roots (`webpki-roots`, compiled in), plus or instead of CA certificates the caller names.
//!
//! Rules every client built here keeps:
//! - certificates are always verified (name and chain); there is no switch to turn that off;
//! - a redirect from `https://` to anything else is refused, so a connection begun over TLS never
//!   continues in the clear (nothing ever retries an `https://` URL as `http://` either);
//! - an `http://` URL is still plain HTTP: the caller chose it. Confidentiality never depends on
//!   the transport (payloads are encrypted to attested keys), TLS only adds to it.

use crate::tls::{certificates, read, TlsError};
use std::path::Path;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// Most redirects followed (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// Which TLS servers a client trusts.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// Trust the built-in web PKI roots.
    web_pki: bool,
    /// And these CA certificates.
    cas: Vec<CertificateDer<'static>>,
}

impl Default for ClientTls {
    /// The built-in web PKI roots only.
    fn default() -> Self {
        ClientTls {
            web_pki: true,
            cas: Vec::new(),
        }
    }
}

impl ClientTls {
    /// The built-in web PKI roots only (the default).
    pub fn web_pki() -> ClientTls {
        ClientTls::default()
    }

    /// The built-in web PKI roots and the CA certificate(s) in `pem` (one or more PEM
    /// `CERTIFICATE` sections).
    pub fn with_extra_ca_pem(pem: &[u8], what: &str) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            web_pki: true,
            cas: trust_anchors(pem, what)?,
        })
    }

    /// The CA certificate(s) in `pem` and nothing else: the server's chain must end at one of
    /// them (a pin, for configurations that name who the server is).
    pub fn only_ca_pem(pem: &[u8], what: &str) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            web_pki: false,
            cas: trust_anchors(pem, what)?,
        })
    }

    /// [`ClientTls::with_extra_ca_pem`] with the PEM read from `path`; the web PKI roots alone
    /// when `path` is `None`.
    pub fn with_extra_ca_file(path: Option<&Path>) -> Result<ClientTls, TlsError> {
        match path {
            None => Ok(ClientTls::default()),
            Some(p) => {
                let pem = read(p, "CA certificate")?;
                ClientTls::with_extra_ca_pem(&pem, &format!("CA certificate {}", p.display()))
            }
        }
    }

    /// Whether the built-in web PKI roots are trusted.
    pub fn trusts_web_pki(&self) -> bool {
        self.web_pki
    }

    /// The CA certificates trusted besides (or instead of) the web PKI roots.
    pub fn extra_cas(&self) -> usize {
        self.cas.len()
    }

    /// A `reqwest` client builder with this trust, certificate verification on, and redirects
    /// that leave `https://` refused. Add timeouts and build. Fails only if reqwest refuses one of
    /// the CA certificates (already checked as trust anchors when this `ClientTls` was made).
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(self.web_pki)
            .redirect(no_downgrade());
        for der in &self.cas {
            // Never skipped: a client that silently trusted fewer CAs than asked would fail later
            // with a misleading certificate error.
            b = b.add_root_certificate(reqwest::Certificate::from_der(der)?);
        }
        Ok(b)
    }

    /// [`ClientTls::builder`] with a whole-request timeout, built.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        self.builder()?.timeout(timeout).build()
    }
}

/// The certificates of `pem`, each checked to be usable as a trust anchor.
fn trust_anchors(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = certificates(pem, what)?;
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store.add(c.clone()).map_err(|e| TlsError::Invalid {
            what: format!("{what}, certificate {}", i + 1),
            reason: format!("not usable as a CA certificate: {e}"),
        })?;
    }
    Ok(certs)
}

/// reqwest's redirect rule (at most 10), except that a redirect chain that reached `https://`
/// never goes anywhere else.
fn no_downgrade() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let was_tls = attempt.previous().iter().any(|u| u.scheme() == "https");
        if was_tls && attempt.url().scheme() != "https" {
            let to = attempt.url().to_string();
            attempt.error(format!("refusing a redirect from https:// to {to}"))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// An error with every cause, so a refused certificate says why ("error sending request for url
/// (…): client error (Connect): invalid peer certificate: UnknownIssuer"); reqwest's own message
/// names only the request. A cause whose text is already in the message is not repeated.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}
