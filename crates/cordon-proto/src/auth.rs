//! Signed HTTP requests: how a party, a training runtime or the KBS administrator proves who sends
//! a request, to whom, and that it is fresh.
//!
//! ```text
//! message   = "cordon signed request v2" || 0x00 || METHOD || 0x00 || PATH || 0x00
//!             || TIME (decimal Unix seconds) || 0x00 || NONCE (32 hex digits) || 0x00
//!             || AUDIENCE (64 hex digits) || 0x00 || SHA-256(body)
//! signature = Ed25519(signer, message)
//! ```
//!
//! Five headers carry it: [`SIGNER_HEADER`], [`TIME_HEADER`], [`NONCE_HEADER`],
//! [`AUDIENCE_HEADER`] and [`SIGNATURE_HEADER`]. The *audience* is the public HPKE key of the
//! server the request is meant for: the KBS's identity key, or a runtime's attested service key.
//! A request captured on its way to one server therefore fails at any other, and at a restarted
//! runtime (new key). Within one server, the time must be within [`REQUEST_WINDOW`] of its clock
//! and the nonce must not have been seen in that window: the server keeps the nonces it accepted
//! (the KBS in its store, a runtime in memory), so a replayed request is refused.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Domain label of a signed request.
pub const REQUEST_DOMAIN: &[u8] = b"cordon signed request v2\0";
/// The signer's Ed25519 public key, hex.
pub const SIGNER_HEADER: &str = "x-cordon-signer";
/// The request time, Unix seconds.
pub const TIME_HEADER: &str = "x-cordon-time";
/// 16 random bytes, hex: refused when seen again within the window.
pub const NONCE_HEADER: &str = "x-cordon-nonce";
/// The public HPKE key (hex) of the server the request is for.
pub const AUDIENCE_HEADER: &str = "x-cordon-audience";
/// The Ed25519 signature over the message above, hex.
pub const SIGNATURE_HEADER: &str = "x-cordon-signature";
/// How far a signed request's time may be from the server's clock, either way. A server keeps
/// accepted nonces at least twice this long.
pub const REQUEST_WINDOW: Duration = Duration::from_secs(300);
/// Bytes of a request nonce.
pub const NONCE_LEN: usize = 16;

/// Why a signed request was refused. The messages name the header and what was wrong, never a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {header}: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    #[error("request is signed for server key {found}, this server's key is {expected}: a request captured on its way elsewhere, or made for an earlier runtime")]
    WrongAudience { found: String, expected: String },
    #[error("request time {time} is more than {window}s from the server's {now}")]
    OutsideWindow { time: u64, now: u64, window: u64 },
    #[error("request signature does not verify (altered request, or another signer)")]
    BadSignature,
    #[error("request nonce {nonce} was already used: replayed request")]
    Replayed { nonce: String },
    #[error("admin token: expected 64 hex digits (the seed of the administrator's key)")]
    BadToken,
}

/// Domain label of the administrator's signature over the KBS's identity key.
pub const IDENTITY_DOMAIN: &[u8] = b"cordon kbs identity v1\0";

/// The administrator's signature over the KBS's identity key (hex), made by the KBS when it creates
/// (or adopts) the admin token: whoever holds the token can check, with nothing else, that an
/// identity key served by the KBS is the one its administrator's token was made with. The host, who
/// carries that answer, cannot make such a signature for a key of its own.
pub fn vouch_identity(admin: &SigningKey, kbs_public_key: &[u8; 32]) -> String {
    hex::encode(
        admin
            .sign(&[IDENTITY_DOMAIN, kbs_public_key.as_slice()].concat())
            .to_bytes(),
    )
}

/// Checks [`vouch_identity`]'s signature by the administrator whose public key is `admin`.
pub fn check_identity(
    admin: &[u8; 32],
    kbs_public_key: &[u8; 32],
    signature_hex: &str,
) -> Result<(), AuthError> {
    let key = VerifyingKey::from_bytes(admin).map_err(|_| AuthError::BadToken)?;
    let signature: [u8; 64] = hex_array(signature_hex, "admin_signature")?;
    key.verify_strict(
        &[IDENTITY_DOMAIN, kbs_public_key.as_slice()].concat(),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| AuthError::BadSignature)
}

/// The KBS administrator's signing key. The admin token (64 hex digits, written once by
/// `cordon kbs serve --init-admin-token-file`) is its Ed25519 seed: admin requests are signed like
/// any other, so the token itself never crosses the network.
pub fn admin_key(token: &str) -> Result<SigningKey, AuthError> {
    let seed = zeroize::Zeroizing::new(hex::decode(token.trim()).map_err(|_| AuthError::BadToken)?);
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| AuthError::BadToken)?;
    Ok(SigningKey::from_bytes(seed))
}

/// A request whose signature verified: who signed it, and the nonce the server must remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequest {
    pub signer: [u8; 32],
    pub nonce: [u8; NONCE_LEN],
    pub time: u64,
}

/// The headers that authenticate a request from `key` to the server whose public key is `audience`.
pub fn sign_request(
    key: &SigningKey,
    method: &str,
    path: &str,
    body: &[u8],
    audience: &[u8; 32],
    now: SystemTime,
) -> [(&'static str, String); 5] {
    use rand::RngCore;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let time = unix(now);
    let sig = key.sign(&message(method, path, time, &nonce, audience, body));
    [
        (SIGNER_HEADER, hex::encode(key.verifying_key().to_bytes())),
        (TIME_HEADER, time.to_string()),
        (NONCE_HEADER, hex::encode(nonce)),
        (AUDIENCE_HEADER, hex::encode(audience)),
        (SIGNATURE_HEADER, hex::encode(sig.to_bytes())),
    ]
}

/// Checks a signed request meant for the server whose public key is `audience`, at `now`. `header`
/// looks a request header up by name. The caller must then refuse the request if it has seen
/// `nonce` before (and remember it for at least twice [`REQUEST_WINDOW`]).
pub fn verify_request<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    method: &str,
    path: &str,
    body: &[u8],
    audience: &[u8; 32],
    now: SystemTime,
) -> Result<SignedRequest, AuthError> {
    let get = |name: &'static str| header(name).ok_or(AuthError::MissingHeader(name));
    let signer: [u8; 32] = hex_array(get(SIGNER_HEADER)?, SIGNER_HEADER)?;
    let time: u64 = get(TIME_HEADER)?
        .trim()
        .parse()
        .map_err(|_| AuthError::BadHeader {
            header: TIME_HEADER,
            reason: "not Unix seconds".into(),
        })?;
    let nonce: [u8; NONCE_LEN] = hex_array(get(NONCE_HEADER)?, NONCE_HEADER)?;
    let claimed: [u8; 32] = hex_array(get(AUDIENCE_HEADER)?, AUDIENCE_HEADER)?;
    if &claimed != audience {
        return Err(AuthError::WrongAudience {
            found: hex::encode(claimed),
            expected: hex::encode(audience),
        });
    }
    let now = unix(now);
    if now.abs_diff(time) > REQUEST_WINDOW.as_secs() {
        return Err(AuthError::OutsideWindow {
            time,
            now,
            window: REQUEST_WINDOW.as_secs(),
        });
    }
    let signature: [u8; 64] = hex_array(get(SIGNATURE_HEADER)?, SIGNATURE_HEADER)?;
    let key = VerifyingKey::from_bytes(&signer).map_err(|_| AuthError::BadHeader {
        header: SIGNER_HEADER,
        reason: "not an Ed25519 public key".into(),
    })?;
    key.verify_strict(
        &message(method, path, time, &nonce, audience, body),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| AuthError::BadSignature)?;
    Ok(SignedRequest {
        signer,
        nonce,
        time,
    })
}

fn hex_array<const N: usize>(text: &str, header: &'static str) -> Result<[u8; N], AuthError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuthError::BadHeader {
            header,
            reason: format!("expected {N} bytes of hex"),
        })
}

fn message(
    method: &str,
    path: &str,
    time: u64,
    nonce: &[u8; NONCE_LEN],
    audience: &[u8; 32],
    body: &[u8],
) -> Vec<u8> {
    let mut m = REQUEST_DOMAIN.to_vec();
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        time.to_string().as_bytes(),
        hex::encode(nonce).as_bytes(),
        hex::encode(audience).as_bytes(),
    ] {
        m.extend_from_slice(part);
        m.push(0);
    }
    m.extend_from_slice(&Sha256::digest(body));
    m
}

/// `t` in Unix seconds; 0 before the epoch (a clock that far off fails every window anyway).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(h: &'a [(&'static str, String); 5]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_request_is_bound_to_method_path_body_time_and_audience() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let now = SystemTime::now();
        let aud = [1u8; 32];
        let h = sign_request(&key, "POST", "/v1/jobs", b"{}", &aud, now);
        let ok = verify_request(lookup(&h), "POST", "/v1/jobs", b"{}", &aud, now).unwrap();
        assert_eq!(ok.signer, key.verifying_key().to_bytes());
        for (m, p, b) in [
            ("GET", "/v1/jobs", &b"{}"[..]),
            ("POST", "/v1/jobs/x", b"{}"),
            ("POST", "/v1/jobs", b"{ }"),
        ] {
            assert_eq!(
                verify_request(lookup(&h), m, p, b, &aud, now),
                Err(AuthError::BadSignature)
            );
        }
        // Another server (or a restarted runtime) is another audience.
        assert!(matches!(
            verify_request(lookup(&h), "POST", "/v1/jobs", b"{}", &[2; 32], now),
            Err(AuthError::WrongAudience { .. })
        ));
        let late = now + Duration::from_secs(301);
        assert!(matches!(
            verify_request(lookup(&h), "POST", "/v1/jobs", b"{}", &aud, late),
            Err(AuthError::OutsideWindow { .. })
        ));
        // Each signature carries its own nonce.
        let h2 = sign_request(&key, "POST", "/v1/jobs", b"{}", &aud, now);
        assert_ne!(h[2].1, h2[2].1);
    }

    #[test]
    fn only_the_administrator_can_vouch_for_an_identity() {
        let admin = SigningKey::from_bytes(&[3; 32]);
        let pk = admin.verifying_key().to_bytes();
        let sig = vouch_identity(&admin, &[5; 32]);
        check_identity(&pk, &[5; 32], &sig).unwrap();
        // Another identity key (the host's), or another signer: refused.
        assert!(check_identity(&pk, &[6; 32], &sig).is_err());
        let host = SigningKey::from_bytes(&[4; 32]);
        assert!(check_identity(&pk, &[6; 32], &vouch_identity(&host, &[6; 32])).is_err());
        assert!(check_identity(&pk, &[5; 32], "00").is_err());
    }

    #[test]
    fn every_header_is_covered() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let now = SystemTime::now();
        let aud = [1u8; 32];
        let h = sign_request(&key, "PUT", "/p", b"body", &aud, now);
        for i in 0..h.len() {
            let mut bad = h.clone();
            // Change one hex digit (or the time by one second).
            let v = &mut bad[i].1;
            let last = v.pop().unwrap();
            v.push(if last == '0' { '1' } else { '0' });
            assert!(
                verify_request(lookup(&bad), "PUT", "/p", b"body", &aud, now).is_err(),
                "header {} changed and still accepted",
                h[i].0
            );
            let missing: Vec<_> = h.iter().filter(|(n, _)| *n != h[i].0).collect();
            let get = |name: &str| {
                missing
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                verify_request(get, "PUT", "/p", b"body", &aud, now),
                Err(AuthError::MissingHeader(h[i].0))
            );
        }
    }
}
