//! DCAP collateral: dcap-qvl's JSON bundle, or a directory of raw Intel PCS responses (file names in
//! the module docs of [`crate::dcap`]).

use super::DcapError;
use dcap_qvl::QuoteCollateralV3;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value};
use sha2::{Digest, Sha384};
use std::path::Path;

/// The endorsements a DCAP quote is verified against: CRLs, TCB info and QE identity with their
/// signatures and issuer chains (dcap-qvl's `QuoteCollateralV3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcapCollateral {
    inner: QuoteCollateralV3,
    /// [`DcapCollateral::digest`], computed once: `inner` cannot change after construction.
    digest: [u8; 48],
    /// What every verification asks of the collateral itself, read once for the same reason.
    facts: CollateralFacts,
}

/// What the per-quote gates read from the collateral alone: which TEE it was issued for and the
/// root each issuer chain ends with. Reading them costs two JSON parses and three PEM decodes,
/// which a cached verification would otherwise pay at every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CollateralFacts {
    /// `Some(true)` for TDX collateral, `Some(false)` for SGX, `None` when the TCB info and QE
    /// identity carry no id (older versions): see `check_collateral_tee`.
    pub(super) issued_for_tdx: Option<bool>,
    /// The last certificate of each issuer chain (field name, DER or why it could not be read).
    pub(super) chain_roots: [(&'static str, ChainRoot); 3],
}

/// The DER of an issuer chain's last certificate, `None` for a chain with none, or why it could
/// not be read.
pub(super) type ChainRoot = Result<Option<Vec<u8>>, String>;

impl From<QuoteCollateralV3> for DcapCollateral {
    fn from(inner: QuoteCollateralV3) -> Self {
        let digest = collateral_digest(&inner);
        let facts = CollateralFacts::read(&inner);
        DcapCollateral {
            inner,
            digest,
            facts,
        }
    }
}

impl CollateralFacts {
    fn read(c: &QuoteCollateralV3) -> CollateralFacts {
        let id = |json: &str| {
            serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_string))
        };
        let tdx = |id: Option<String>, tdx_id: &str, sgx_id: &str| match id.as_deref() {
            Some(i) if i == tdx_id => Some(true),
            Some(i) if i == sgx_id => Some(false),
            _ => None,
        };
        let root = |chain: &str| super::anchor::last_pem_certificate(chain);
        CollateralFacts {
            issued_for_tdx: tdx(id(&c.tcb_info), "TDX", "SGX").or(tdx(
                id(&c.qe_identity),
                "TD_QE",
                "QE",
            )),
            chain_roots: [
                ("tcb_info_issuer_chain", root(&c.tcb_info_issuer_chain)),
                (
                    "qe_identity_issuer_chain",
                    root(&c.qe_identity_issuer_chain),
                ),
                ("pck_crl_issuer_chain", root(&c.pck_crl_issuer_chain)),
            ],
        }
    }
}

/// SHA-384 over every field of the collateral in declaration order, each as an 8-byte
/// little-endian length and its bytes; the optional PCK chain is preceded by a presence byte.
fn collateral_digest(c: &QuoteCollateralV3) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(b"cordon dcap collateral v1");
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(c.pck_crl_issuer_chain.as_bytes());
    field(&c.root_ca_crl);
    field(&c.pck_crl);
    field(c.tcb_info_issuer_chain.as_bytes());
    field(c.tcb_info.as_bytes());
    field(&c.tcb_info_signature);
    field(c.qe_identity_issuer_chain.as_bytes());
    field(c.qe_identity.as_bytes());
    field(&c.qe_identity_signature);
    match &c.pck_certificate_chain {
        None => field(b"\0"),
        Some(chain) => {
            field(b"\x01");
            field(chain.as_bytes());
        }
    }
    h.finalize().into()
}

/// `QuoteCollateralV3` fields in the JSON bundle: text fields, then hex-encoded byte fields.
const TEXT_FIELDS: [&str; 5] = [
    "pck_crl_issuer_chain",
    "tcb_info_issuer_chain",
    "tcb_info",
    "qe_identity_issuer_chain",
    "qe_identity",
];
const HEX_FIELDS: [&str; 4] = [
    "root_ca_crl",
    "pck_crl",
    "tcb_info_signature",
    "qe_identity_signature",
];
const PCK_CHAIN_FIELD: &str = "pck_certificate_chain";

impl DcapCollateral {
    /// The collateral as dcap-qvl takes it.
    pub fn inner(&self) -> &QuoteCollateralV3 {
        &self.inner
    }

    /// SHA-384 over every field (each length-prefixed): what [`super::Verifier`] keys the
    /// collateral it has checked by.
    pub fn digest(&self) -> &[u8; 48] {
        &self.digest
    }

    pub(super) fn facts(&self) -> &CollateralFacts {
        &self.facts
    }

    /// Reads dcap-qvl's JSON bundle (as in `testdata/attestation/tdx/tdx_quote_collateral.json`):
    /// text fields as strings, `root_ca_crl`, `pck_crl` and both signatures as hex, optional
    /// `pck_certificate_chain`. Errors name the field.
    pub fn from_json(bytes: &[u8]) -> Result<DcapCollateral, DcapError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| DcapError::CollateralJson(e.to_string()))?;
        let map = value
            .as_object()
            .ok_or_else(|| DcapError::CollateralJson("expected a JSON object".into()))?;
        let text = |field| text_field(map, field);
        let bytes = |field| hex_field(map, field);
        let pck_certificate_chain = match map.get(PCK_CHAIN_FIELD) {
            None | Some(Value::Null) => None,
            Some(_) => Some(text(PCK_CHAIN_FIELD)?),
        };
        let [pck_crl_issuer_chain, tcb_info_issuer_chain, tcb_info, qe_identity_issuer_chain, qe_identity] =
            TEXT_FIELDS.map(text);
        let [root_ca_crl, pck_crl, tcb_info_signature, qe_identity_signature] =
            HEX_FIELDS.map(bytes);
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain: pck_crl_issuer_chain?,
            root_ca_crl: root_ca_crl?,
            pck_crl: pck_crl?,
            tcb_info_issuer_chain: tcb_info_issuer_chain?,
            tcb_info: tcb_info?,
            tcb_info_signature: tcb_info_signature?,
            qe_identity_issuer_chain: qe_identity_issuer_chain?,
            qe_identity: qe_identity?,
            qe_identity_signature: qe_identity_signature?,
            pck_certificate_chain,
        }
        .into())
    }

    /// The JSON bundle [`DcapCollateral::from_json`] reads (what a runtime ships with its quote).
    pub fn to_json(&self) -> Vec<u8> {
        let c = &self.inner;
        let mut map = Map::new();
        for (field, text) in TEXT_FIELDS.iter().zip([
            &c.pck_crl_issuer_chain,
            &c.tcb_info_issuer_chain,
            &c.tcb_info,
            &c.qe_identity_issuer_chain,
            &c.qe_identity,
        ]) {
            map.insert(field.to_string(), Value::String(text.clone()));
        }
        for (field, bytes) in HEX_FIELDS.iter().zip([
            &c.root_ca_crl,
            &c.pck_crl,
            &c.tcb_info_signature,
            &c.qe_identity_signature,
        ]) {
            map.insert(field.to_string(), Value::String(hex::encode(bytes)));
        }
        if let Some(chain) = &c.pck_certificate_chain {
            map.insert(PCK_CHAIN_FIELD.to_string(), Value::String(chain.clone()));
        }
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }

    /// Reads a directory of raw Intel PCS responses (`pck_crl.der`, `pck_crl_issuer_chain.pem`,
    /// `root_ca_crl.der`, `tcb_info.json`, `tcb_info_issuer_chain.pem`, `qe_identity.json`,
    /// `qe_identity_issuer_chain.pem`, optionally `pck_certificate_chain.pem`; see the module docs).
    /// The only file I/O of this crate.
    pub fn from_dir(path: &Path) -> Result<DcapCollateral, DcapError> {
        let bytes = |name: &str| read_file(path, name);
        let text = |name: &str| bytes(name).and_then(|b| utf8(name, b));
        let (tcb_info, tcb_info_signature) =
            signed_body(&text("tcb_info.json")?, "tcb_info.json", "tcbInfo")?;
        let (qe_identity, qe_identity_signature) = signed_body(
            &text("qe_identity.json")?,
            "qe_identity.json",
            "enclaveIdentity",
        )?;
        let pck_certificate_chain = match text("pck_certificate_chain.pem") {
            Err(DcapError::CollateralFileMissing { .. }) => None,
            chain => Some(chain?),
        };
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain: text("pck_crl_issuer_chain.pem")?,
            root_ca_crl: bytes("root_ca_crl.der")?,
            pck_crl: bytes("pck_crl.der")?,
            tcb_info_issuer_chain: text("tcb_info_issuer_chain.pem")?,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain: text("qe_identity_issuer_chain.pem")?,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain,
        }
        .into())
    }
}

fn field_error(field: &str, reason: impl Into<String>) -> DcapError {
    DcapError::CollateralField {
        field: field.into(),
        reason: reason.into(),
    }
}

fn text_field(map: &Map<String, Value>, field: &str) -> Result<String, DcapError> {
    match map.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(field_error(
            field,
            format!("expected a string, found {other}"),
        )),
        None => Err(field_error(field, "missing")),
    }
}

fn hex_field(map: &Map<String, Value>, field: &str) -> Result<Vec<u8>, DcapError> {
    let text = text_field(map, field)?;
    hex::decode(text.trim()).map_err(|e| field_error(field, format!("invalid hex: {e}")))
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, DcapError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DcapError::CollateralFileMissing {
            path: path.display().to_string(),
        },
        _ => DcapError::CollateralFileUnreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        },
    })
}

fn utf8(name: &str, bytes: Vec<u8>) -> Result<String, DcapError> {
    String::from_utf8(bytes).map_err(|e| field_error(name, format!("not UTF-8: {e}")))
}

/// Splits a PCS body `{"<key>": {…}, "signature": "<hex>"}` into the exact text of `<key>`'s value
/// (what Intel signed) and the decoded signature.
fn signed_body(body: &str, file: &str, key: &str) -> Result<(String, Vec<u8>), DcapError> {
    let members = raw_members(body).ok_or_else(|| {
        field_error(
            file,
            "expected a JSON object {\"…\": {…}, \"signature\": \"…\"}",
        )
    })?;
    let member = |name: &str| {
        let mut found = members
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, raw)| *raw);
        match (found.next(), found.next()) {
            (Some(raw), None) => Ok(raw),
            (None, _) => Err(field_error(file, format!("no `{name}` member"))),
            (Some(_), Some(_)) => Err(field_error(file, format!("`{name}` appears twice"))),
        }
    };
    let signed = member(key)?;
    if !signed.starts_with('{') {
        return Err(field_error(file, format!("`{key}` is not an object")));
    }
    let signature: String = serde_json::from_str(member("signature")?)
        .map_err(|e| field_error(file, format!("`signature` is not a string: {e}")))?;
    let signature = hex::decode(signature.trim())
        .map_err(|e| field_error(file, format!("`signature` is not hex: {e}")))?;
    Ok((signed.to_string(), signature))
}

const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

/// The members of a JSON object as (key, exact value text), in order; `None` if `text` is not one
/// JSON object. Nested values are delimited by serde_json, so their text is never re-serialized.
pub(super) fn raw_members(text: &str) -> Option<Vec<(String, &str)>> {
    let mut rest = text.trim_start_matches(JSON_WS).strip_prefix('{')?;
    let mut members = Vec::new();
    if let Some(after) = rest.trim_start_matches(JSON_WS).strip_prefix('}') {
        return after.trim_matches(JSON_WS).is_empty().then_some(members);
    }
    loop {
        let (key, after_key) = next_value::<String>(rest)?;
        let value_start = after_key.trim_start_matches(JSON_WS).strip_prefix(':')?;
        let (_, after_value) = next_value::<IgnoredAny>(value_start)?;
        let value = value_start.get(..value_start.len().checked_sub(after_value.len())?)?;
        members.push((key, value.trim_matches(JSON_WS)));
        let after_value = after_value.trim_start_matches(JSON_WS);
        if let Some(next) = after_value.strip_prefix(',') {
            rest = next;
        } else {
            let after = after_value.strip_prefix('}')?;
            return after.trim_matches(JSON_WS).is_empty().then_some(members);
        }
    }
}

/// The first JSON value of `text` and the text after it.
fn next_value<T: DeserializeOwned>(text: &str) -> Option<(T, &str)> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<T>();
    let value = stream.next()?.ok()?;
    Some((value, text.get(stream.byte_offset()..)?))
}
