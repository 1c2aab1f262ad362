//! Verifying a key broker before sending it a key.
//!
//! A KBS that runs in a TEE serves, with its identity key, evidence whose report_data is
//! [`kbs_identity_report_data`] of that key (`GET /kbs/v1/identity`). A model owner or data party
//! that holds a policy for the KBS (its measurement, no debug, the platforms it accepts) verifies
//! that evidence with [`verify_kbs_identity`] and seals its DEK only to the key it binds: an
//! operator who runs a modified KBS on TEE hardware cannot produce evidence with the measurement
//! the party pinned, so nothing is sealed to it. A party given a policy refuses a KBS that serves
//! no evidence.

use crate::ClientTls;
use cordon_attest::{appraise, Claims, Endorsements, Platform, Policy, Verdict};
use cordon_http::client::error_text;
use cordon_proto::kbs::{kbs_identity_report_data, ErrorBody, KbsIdentity};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Why a KBS's identity was refused, or could not be fetched. Each names what failed.
#[derive(Debug, Error)]
pub enum KbsIdentityError {
    #[error(
        "KBS identity key {key} comes with no TEE evidence (the KBS runs with `--tee none`, or \
         predates identity evidence): a KBS policy was given, so nothing is sealed to it"
    )]
    NoEvidence { key: String },
    #[error("the KBS's identity evidence failed verification: {0}")]
    Evidence(#[from] cordon_attest::EvidenceError),
    #[error(
        "the KBS's identity evidence says platform {declared}, but the evidence verified as \
         {verified}"
    )]
    PlatformMismatch {
        declared: Platform,
        verified: Platform,
    },
    #[error(
        "the KBS's evidence does not bind its identity key {key}: report_data is {found}, \
         expected {expected}"
    )]
    KeyNotBound {
        key: String,
        found: String,
        expected: String,
    },
    #[error("the KBS is rejected by the KBS policy: {}", .0.reasons())]
    Rejected(Verdict),
    #[error(
        "the KBS's attested identity key {attested} is not the pinned key {pinned}: another KBS \
         answered, or the pin is stale"
    )]
    NotPinned { attested: String, pinned: String },
    #[error("the KBS policy accepts `sim` and its file has no [endorsements] section with sim_trust_anchors: cannot verify sim evidence")]
    NoEndorsements,
    #[error("HTTP: {0}")]
    Http(String),
    #[error("KBS answered {status}: {error}")]
    Server { status: u16, error: String },
    #[error("malformed identity from the KBS: {0}")]
    Malformed(String),
}

/// A KBS identity whose evidence was verified and appraised.
#[derive(Debug, Clone)]
pub struct VerifiedKbs {
    /// The identity key the evidence binds: seal DEKs to this.
    pub hpke_public_key: [u8; 32],
    /// The KBS's verified claims (platform, measurement, debug, …).
    pub claims: Claims,
}

/// Verifies `identity`'s evidence with `endorsements` at `now`, checks that its report_data binds
/// the identity key, and appraises the claims with `policy`. The key it returns is the only one a
/// DEK may be sealed to.
pub fn verify_kbs_identity(
    identity: &KbsIdentity,
    policy: &Policy,
    endorsements: &Endorsements,
    now: SystemTime,
) -> Result<[u8; 32], KbsIdentityError> {
    verify_kbs_identity_claims(identity, policy, endorsements, now).map(|v| v.hpke_public_key)
}

/// [`verify_kbs_identity`], also returning the verified claims (to show them).
pub fn verify_kbs_identity_claims(
    identity: &KbsIdentity,
    policy: &Policy,
    endorsements: &Endorsements,
    now: SystemTime,
) -> Result<VerifiedKbs, KbsIdentityError> {
    let key = identity.hpke_public_key;
    let Some(evidence) = &identity.evidence else {
        return Err(KbsIdentityError::NoEvidence {
            key: hex::encode(key),
        });
    };
    // Verify, then appraise (design rule 2); the binding is checked before the appraisal so that
    // evidence about another key is named as such whatever its measurement.
    let shipped = evidence
        .endorsements
        .decode()
        .map_err(|e| KbsIdentityError::Malformed(e.to_string()))?;
    let claims = cordon_attest::Verifier::new(endorsements.clone()).verify_shipped(
        &evidence.evidence,
        &shipped,
        now,
    )?;
    if claims.platform != evidence.platform {
        return Err(KbsIdentityError::PlatformMismatch {
            declared: evidence.platform,
            verified: claims.platform,
        });
    }
    let expected = kbs_identity_report_data(&key);
    if claims.report_data != expected {
        return Err(KbsIdentityError::KeyNotBound {
            key: hex::encode(key),
            found: hex::encode(claims.report_data),
            expected: hex::encode(expected),
        });
    }
    let verdict = appraise(&claims, policy);
    if !verdict.is_accepted() {
        return Err(KbsIdentityError::Rejected(verdict));
    }
    Ok(VerifiedKbs {
        hpke_public_key: key,
        claims,
    })
}

/// `GET /kbs/v1/identity` of the KBS at `url`, as the network answered it (unverified).
pub async fn fetch_kbs_identity(
    url: &str,
    tls: &ClientTls,
) -> Result<KbsIdentity, KbsIdentityError> {
    let http = tls
        .client(Duration::from_secs(30))
        .map_err(|e| KbsIdentityError::Http(error_text(&e)))?;
    let resp = http
        .get(format!("{}/kbs/v1/identity", url.trim_end_matches('/')))
        .send()
        .await
        .map_err(|e| KbsIdentityError::Http(error_text(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let error = match resp.json::<ErrorBody>().await {
            Ok(b) => format!("{} ({})", b.error, b.code),
            Err(_) => String::new(),
        };
        return Err(KbsIdentityError::Server {
            status: status.as_u16(),
            error,
        });
    }
    resp.json()
        .await
        .map_err(|e| KbsIdentityError::Malformed(error_text(&e)))
}

/// Fetches the identity of the KBS at `url` and verifies it ([`verify_kbs_identity_claims`]) with
/// the policy and the endorsements of `doc`. With `pinned`, the attested key must also be that key.
pub async fn fetch_verified_kbs(
    url: &str,
    tls: &ClientTls,
    doc: &cordon_attest::PolicyDocument,
    pinned: Option<&[u8; 32]>,
    now: SystemTime,
) -> Result<VerifiedKbs, KbsIdentityError> {
    let endorsements = doc
        .verification_endorsements()
        .ok_or(KbsIdentityError::NoEndorsements)?;
    let identity = fetch_kbs_identity(url, tls).await?;
    let verified = verify_kbs_identity_claims(&identity, &doc.policy, &endorsements, now)?;
    if let Some(pinned) = pinned {
        if *pinned != verified.hpke_public_key {
            return Err(KbsIdentityError::NotPinned {
                attested: hex::encode(verified.hpke_public_key),
                pinned: hex::encode(pinned),
            });
        }
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_attest::AppraisalFailure;
    use cordon_proto::kbs::KbsEvidence;
    use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};

    const MEASUREMENT: [u8; 48] = [0x4b; 48];
    const KEY: [u8; 32] = [0x11; 32];

    struct Fixture {
        hw: SimHardwareKey,
        anchors: Endorsements,
        policy: Policy,
    }

    fn fixture() -> Fixture {
        let hw = SimHardwareKey::generate();
        let anchors = Endorsements {
            sim_trust_anchors: vec![hw.public_key()],
            ..Default::default()
        };
        Fixture {
            hw,
            anchors,
            policy: Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]),
        }
    }

    impl Fixture {
        /// An identity for `key` whose sim evidence binds `bound` and has `measurement`.
        fn identity(
            &self,
            key: [u8; 32],
            bound: [u8; 32],
            measurement: [u8; 48],
            debug: bool,
        ) -> KbsIdentity {
            let hw = SimHardwareKey::from_file_contents(&self.hw.to_file_contents()).unwrap();
            let tee = SimTee::new(hw, measurement, [0; 32], debug);
            KbsIdentity {
                hpke_public_key: key,
                admin_signature: None,
                evidence: Some(KbsEvidence {
                    endorsements: Default::default(),
                    platform: Platform::Sim,
                    evidence: tee.evidence(&kbs_identity_report_data(&bound)).unwrap(),
                }),
            }
        }

        fn check(&self, id: &KbsIdentity) -> Result<[u8; 32], KbsIdentityError> {
            verify_kbs_identity(id, &self.policy, &self.anchors, SystemTime::now())
        }
    }

    #[test]
    fn evidence_binding_the_key_with_the_pinned_measurement_is_accepted() {
        let f = fixture();
        let id = f.identity(KEY, KEY, MEASUREMENT, false);
        assert_eq!(f.check(&id).unwrap(), KEY);
        let v = verify_kbs_identity_claims(&id, &f.policy, &f.anchors, SystemTime::now()).unwrap();
        assert_eq!(v.claims.launch_measurement, MEASUREMENT.to_vec());
        assert!(!v.claims.hardware_backed);
    }

    #[test]
    fn evidence_binding_another_key_is_refused() {
        let f = fixture();
        // The host serves its own key next to a genuine KBS's evidence.
        let id = f.identity([0x22; 32], KEY, MEASUREMENT, false);
        let e = f.check(&id).unwrap_err();
        assert!(matches!(e, KbsIdentityError::KeyNotBound { .. }), "{e}");
        assert!(e.to_string().contains(&"22".repeat(32)), "{e}");
    }

    #[test]
    fn a_measurement_the_policy_does_not_list_is_refused() {
        let f = fixture();
        let id = f.identity(KEY, KEY, [0x66; 48], false);
        let e = f.check(&id).unwrap_err();
        let KbsIdentityError::Rejected(verdict) = &e else {
            panic!("{e}")
        };
        assert!(verdict
            .failures
            .iter()
            .any(|f| matches!(f, AppraisalFailure::MeasurementNotAllowed { .. })));
        assert!(e.to_string().contains(&"66".repeat(48)), "{e}");
    }

    #[test]
    fn a_debug_kbs_is_refused_unless_the_policy_allows_debug() {
        let mut f = fixture();
        let id = f.identity(KEY, KEY, MEASUREMENT, true);
        let e = f.check(&id).unwrap_err();
        let KbsIdentityError::Rejected(verdict) = &e else {
            panic!("{e}")
        };
        assert!(verdict
            .failures
            .iter()
            .any(|f| matches!(f, AppraisalFailure::DebugNotAllowed)));
        f.policy.allow_debug = true;
        assert_eq!(f.check(&id).unwrap(), KEY);
    }

    #[test]
    fn a_kbs_without_evidence_is_refused() {
        let f = fixture();
        let mut id = f.identity(KEY, KEY, MEASUREMENT, false);
        id.evidence = None;
        assert!(matches!(
            f.check(&id),
            Err(KbsIdentityError::NoEvidence { .. })
        ));
    }

    #[test]
    fn tampered_or_foreign_evidence_is_refused() {
        let f = fixture();
        let good = f.identity(KEY, KEY, MEASUREMENT, false);
        let len = good.evidence.as_ref().unwrap().evidence.len();
        for i in 0..len {
            let mut bad = good.clone();
            bad.evidence.as_mut().unwrap().evidence[i] ^= 0x01;
            assert!(f.check(&bad).is_err(), "byte {i} flipped was accepted");
        }
        let mut short = good.clone();
        short.evidence.as_mut().unwrap().evidence.truncate(len - 1);
        assert!(matches!(
            f.check(&short),
            Err(KbsIdentityError::Evidence(_))
        ));
        // Signed by a sim key the party does not trust.
        let other = fixture();
        let foreign = other.identity(KEY, KEY, MEASUREMENT, false);
        assert!(matches!(
            f.check(&foreign),
            Err(KbsIdentityError::Evidence(_))
        ));
        // A declared platform that is not what the evidence is.
        let mut relabelled = good;
        relabelled.evidence.as_mut().unwrap().platform = Platform::Snp;
        assert!(matches!(
            f.check(&relabelled),
            Err(KbsIdentityError::PlatformMismatch { .. })
        ));
    }

    #[test]
    fn sim_evidence_is_refused_by_a_policy_that_does_not_name_sim() {
        let mut f = fixture();
        f.policy = Policy::new(vec![Platform::Snp], vec![MEASUREMENT.to_vec()]);
        let id = f.identity(KEY, KEY, MEASUREMENT, false);
        assert!(matches!(f.check(&id), Err(KbsIdentityError::Rejected(_))));
    }

    #[test]
    fn runtime_evidence_cannot_pass_for_a_kbs_identity() {
        // A genuine runtime's evidence over its own keys (no models, empty nonce) next to its HPKE
        // key: the labels differ, so report_data never matches.
        let f = fixture();
        let keys = cordon_proto::RuntimeKeys {
            hpke_public_key: KEY,
            hpke_key_id: 0,
            signing_public_key: [0x22; 32],
        };
        let hw = SimHardwareKey::from_file_contents(&f.hw.to_file_contents()).unwrap();
        let ev = SimTee::new(hw, MEASUREMENT, [0; 32], false)
            .evidence(&cordon_proto::report_data(&[], &keys, &[]))
            .unwrap();
        let id = KbsIdentity {
            hpke_public_key: KEY,
            admin_signature: None,
            evidence: Some(KbsEvidence {
                endorsements: Default::default(),
                platform: Platform::Sim,
                evidence: ev,
            }),
        };
        assert!(matches!(
            f.check(&id),
            Err(KbsIdentityError::KeyNotBound { .. })
        ));
    }
}
