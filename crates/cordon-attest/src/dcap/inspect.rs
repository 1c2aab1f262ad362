//! Every field of a DCAP quote as JSON (byte fields as lowercase hex), for `cordon attest inspect`
//! and [`crate::Claims::raw`].

use super::{parse_quote, read, DcapError, TEE_TDX};
use dcap_qvl::quote::{AuthData, AuthDataV3, EnclaveReport, Quote, Report, TDReport10};
use dcap_qvl::QuoteClaims;
use serde_json::{json, Value};

/// Parses a quote without verifying anything and returns every header and body field as JSON.
pub fn inspect(quote: &[u8]) -> Result<Value, DcapError> {
    let (_, parsed) = parse_quote(quote)?;
    Ok(quote_json(&parsed))
}

pub(super) fn quote_json(quote: &Quote) -> Value {
    let h = &quote.header;
    json!({
        "header": {
            "version": h.version,
            "attestation_key_type": h.attestation_key_type,
            "tee_type": format!("{:#010x}", h.tee_type),
            "tee": if h.tee_type == TEE_TDX { "tdx" } else { "sgx" },
            "qe_svn": h.qe_svn,
            "pce_svn": h.pce_svn,
            "qe_vendor_id": hex::encode(h.qe_vendor_id),
            "user_data": hex::encode(h.user_data),
        },
        "body": report_json(&quote.report),
        "signed_length": quote.signed_length(),
        "auth_data": auth_data_json(&quote.auth_data),
    })
}

/// SGX enclave report body (Intel SGX ECDSA Quote Library API, "Enclave Report Body"; `sgx_report_body_t`):
/// CPUSVN @0 (16), MISCSELECT @16 (4), reserved @20 (12), ISVEXTPRODID @32 (16), ATTRIBUTES @48 (16),
/// MRENCLAVE @64 (32), reserved @96 (32), MRSIGNER @128 (32), reserved @160 (32), CONFIGID @192 (64),
/// ISVPRODID @256 (2), ISVSVN @258 (2), CONFIGSVN @260 (2), reserved @262 (42), ISVFAMILYID @304 (16),
/// REPORTDATA @320 (64). dcap-qvl folds ISVEXTPRODID, CONFIGID, CONFIGSVN and ISVFAMILYID into its
/// reserved fields; these accessors take them out again.
fn sgx_isv_ext_prod_id(r: &EnclaveReport) -> &[u8] {
    &r.reserved1[12..28]
}

pub(super) fn sgx_config_id(r: &EnclaveReport) -> &[u8] {
    &r.reserved3[32..96]
}

pub(super) fn sgx_config_svn(r: &EnclaveReport) -> u16 {
    u16::from_le_bytes([r.reserved4[0], r.reserved4[1]])
}

fn sgx_isv_family_id(r: &EnclaveReport) -> &[u8] {
    &r.reserved4[44..60]
}

/// ATTRIBUTES.FLAGS bit 1: DEBUG.
pub(super) fn sgx_debug(r: &EnclaveReport) -> bool {
    r.attributes[0] & 0x02 != 0
}

/// TD_ATTRIBUTES bits 7:0 are the TUD ("TD under debug") group: DEBUG (bit 0) and the profiling
/// bits 6:4 that dcap-qvl gates together with it. The TDX module ABI says a TD with any of them set
/// is untrusted, so any set bit counts as debug.
pub(super) fn td_debug(td: &TDReport10) -> bool {
    td.td_attributes[0] != 0
}

pub(super) fn attestation_key(quote: &Quote) -> [u8; 64] {
    match &quote.auth_data {
        AuthData::V3(a) => a.ecdsa_attestation_key,
        AuthData::V4(a) => a.ecdsa_attestation_key,
    }
}

/// Reads an enclave report body at the offsets above (the QE report, which dcap-qvl keeps as bytes).
fn enclave_report(b: &[u8]) -> Option<EnclaveReport> {
    Some(EnclaveReport {
        cpu_svn: read(b, 0)?,
        misc_select: u32::from_le_bytes(read(b, 16)?),
        reserved1: read(b, 20)?,
        attributes: read(b, 48)?,
        mr_enclave: read(b, 64)?,
        reserved2: read(b, 96)?,
        mr_signer: read(b, 128)?,
        reserved3: read(b, 160)?,
        isv_prod_id: u16::from_le_bytes(read(b, 256)?),
        isv_svn: u16::from_le_bytes(read(b, 258)?),
        reserved4: read(b, 260)?,
        report_data: read(b, 320)?,
    })
}

fn sgx_json(r: &EnclaveReport) -> Value {
    json!({
        "cpu_svn": hex::encode(r.cpu_svn),
        "misc_select": format!("{:#010x}", r.misc_select),
        "isv_ext_prod_id": hex::encode(sgx_isv_ext_prod_id(r)),
        "attributes": hex::encode(r.attributes),
        "debug": sgx_debug(r),
        "mr_enclave": hex::encode(r.mr_enclave),
        "mr_signer": hex::encode(r.mr_signer),
        "config_id": hex::encode(sgx_config_id(r)),
        "isv_prod_id": r.isv_prod_id,
        "isv_svn": r.isv_svn,
        "config_svn": sgx_config_svn(r),
        "isv_family_id": hex::encode(sgx_isv_family_id(r)),
        "report_data": hex::encode(r.report_data),
    })
}

/// TD report body (Intel TDX DCAP Quote Generation Library, "TD Quote Body", quote v4):
/// TEE_TCB_SVN @0 (16), MRSEAM @16 (48), MRSIGNERSEAM @64 (48), SEAMATTRIBUTES @112 (8),
/// TDATTRIBUTES @120 (8), XFAM @128 (8), MRTD @136 (48), MRCONFIGID @184 (48), MROWNER @232 (48),
/// MROWNERCONFIG @280 (48), RTMR0..3 @328/376/424/472 (48 each), REPORTDATA @520 (64).
fn td10_json(td: &TDReport10) -> Value {
    json!({
        "tee_tcb_svn": hex::encode(td.tee_tcb_svn),
        "mr_seam": hex::encode(td.mr_seam),
        "mr_signer_seam": hex::encode(td.mr_signer_seam),
        "seam_attributes": hex::encode(td.seam_attributes),
        "td_attributes": hex::encode(td.td_attributes),
        "debug": td_debug(td),
        "xfam": hex::encode(td.xfam),
        "mr_td": hex::encode(td.mr_td),
        "mr_config_id": hex::encode(td.mr_config_id),
        "mr_owner": hex::encode(td.mr_owner),
        "mr_owner_config": hex::encode(td.mr_owner_config),
        "rtmr0": hex::encode(td.rt_mr0),
        "rtmr1": hex::encode(td.rt_mr1),
        "rtmr2": hex::encode(td.rt_mr2),
        "rtmr3": hex::encode(td.rt_mr3),
        "report_data": hex::encode(td.report_data),
    })
}

/// Adds `fields` to the object `base`.
fn extend(mut base: Value, fields: Value) -> Value {
    if let (Some(base), Value::Object(fields)) = (base.as_object_mut(), fields) {
        base.extend(fields);
    }
    base
}

/// The report body, tagged with its kind. TD 1.5 (quote v5 body type 3) adds TEE_TCB_SVN2 @584 (16)
/// and MRSERVICETD @600 (48); TD 1.5ex (body type 4) the fields after them (`sgx_quote_5.h`).
pub(super) fn report_json(report: &Report) -> Value {
    match report {
        Report::SgxEnclave(r) => extend(json!({"type": "sgx_enclave"}), sgx_json(r)),
        Report::TD10(td) => extend(json!({"type": "td10"}), td10_json(td)),
        Report::TD15(td) => extend(
            extend(json!({"type": "td15"}), td10_json(&td.base)),
            json!({
                "tee_tcb_svn2": hex::encode(td.tee_tcb_svn2),
                "mr_service_td": hex::encode(td.mr_service_td),
            }),
        ),
        Report::TD15Ex(ex) => extend(
            extend(
                report_json(&Report::TD15(ex.base)),
                json!({"type": "td15ex"}),
            ),
            json!({
                "vmid": ex.vmid,
                "td_id": hex::encode(ex.td_id),
                "dev_info": hex::encode(ex.dev_info),
                "init_service_td_hash": hex::encode(ex.init_service_td_hash),
                "init_service_td_attributes": hex::encode(ex.init_service_td_attributes),
                "init_cpu_svn": hex::encode(ex.init_cpu_svn),
                "init_tee_tcb_svn": hex::encode(ex.init_tee_tcb_svn),
                "init_tee_fmspc": hex::encode(ex.init_tee_fmspc),
                "cur_service_td_hash": hex::encode(ex.cur_service_td_hash),
                "cur_service_td_attributes": hex::encode(ex.cur_service_td_attributes),
            }),
        ),
    }
}

/// Quote signature data (v3: "Quote Signature Data Structure"; v4/v5: ECDSA signature and key,
/// then certification data type 6 holding the QE report certification data).
fn auth_data_json(auth: &AuthData) -> Value {
    let (outer_type, v3) = match auth {
        AuthData::V3(a) => (None, a.clone()),
        AuthData::V4(a) => (Some(a.certification_data.cert_type), a.clone().into_v3()),
    };
    let AuthDataV3 {
        ecdsa_signature,
        ecdsa_attestation_key,
        qe_report,
        qe_report_signature,
        qe_auth_data,
        certification_data,
    } = v3;
    let qe_report = enclave_report(&qe_report)
        .map(|r| sgx_json(&r))
        .unwrap_or_else(|| Value::String(hex::encode(qe_report)));
    let body = &certification_data.body.data;
    let pem = (certification_data.cert_type == 5)
        .then(|| std::str::from_utf8(body).ok())
        .flatten()
        .map(|text| text.trim_end_matches('\0'));
    json!({
        "ecdsa_signature": hex::encode(ecdsa_signature),
        "ecdsa_attestation_key": hex::encode(ecdsa_attestation_key),
        "certification_data_type": outer_type,
        "qe_report": qe_report,
        "qe_report_signature": hex::encode(qe_report_signature),
        "qe_auth_data": hex::encode(&qe_auth_data.data),
        "pck_certification_data_type": certification_data.cert_type,
        "pck_certification_data": match pem {
            Some(text) => Value::String(text.into()),
            None => Value::String(hex::encode(body)),
        },
    })
}

/// What dcap-qvl established beyond the quote: TCB levels, PCK certificate identity, collateral dates.
pub(super) fn verification_json(v: &QuoteClaims) -> Value {
    let pck = &v.platform.pck;
    let level = |status: String, date: &str, advisories: &[String]| json!({"status": status, "date": date, "advisory_ids": advisories});
    json!({
        "tcb_status": v.tcb.status.to_string(),
        "advisory_ids": v.tcb.advisory_ids,
        "tcb_eval_data_number": v.tcb.eval_data_number,
        "platform_tcb_level": level(
            v.platform.tcb_level.tcb_status.to_string(),
            &v.platform.tcb_level.tcb_date,
            &v.platform.tcb_level.advisory_ids,
        ),
        "current_tcb_level": v.platform.current_tcb_level.as_ref().map(|l| {
            level(l.tcb_status.to_string(), &l.tcb_date, &l.advisory_ids)
        }),
        "qe_tcb_level": level(
            v.qe.tcb_level.tcb_status.to_string(),
            &v.qe.tcb_level.tcb_date,
            &v.qe.tcb_level.advisory_ids,
        ),
        "qe_tcb_eval_data_number": v.qe.tcb_eval_data_number,
        "qe_report": sgx_json(&v.qe.report),
        "pck": {
            "fmspc": hex::encode(pck.fmspc),
            "cpu_svn": hex::encode(pck.cpu_svn),
            "pce_svn": pck.pce_svn,
            "pce_id": hex::encode(&pck.pce_id),
            "ppid": hex::encode(&pck.ppid),
            "sgx_type": pck.sgx_type,
            "platform_instance_id": pck.platform_instance_id.map(hex::encode),
            "dynamic_platform": format!("{:?}", pck.dynamic_platform),
            "cached_keys": format!("{:?}", pck.cached_keys),
            "smt_enabled": format!("{:?}", pck.smt_enabled),
        },
        "root_key_id": hex::encode(&v.platform.root_key_id),
        "pck_crl_num": v.platform.pck_crl_num,
        "root_ca_crl_num": v.platform.root_ca_crl_num,
        "collateral_earliest_issue": super::explain::rfc3339(v.earliest_issue_date),
        "collateral_latest_issue": super::explain::rfc3339(v.latest_issue_date),
        "collateral_earliest_expiration": super::explain::rfc3339(v.earliest_expiration_date),
    })
}
