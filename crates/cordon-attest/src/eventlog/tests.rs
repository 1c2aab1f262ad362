//! Event log tests: synthetic logs whose replay is computed here with plain sha2 calls, every
//! error, and two real TDX CCEL logs with the quote / TDREPORT taken in the same TD.

use super::*;
use sha2::Sha256;

const SHA256: u16 = 0x000B;
/// `TCG_PCClientPCREvent`: MR index (4), event type (4), SHA-1 digest (20), event size (4).
const HEADER_EVENT_FIXED: usize = 32;

/// A Spec ID record (PFP 10.2.1 + 10.4.5.1) listing `algs`.
fn header_with(
    mr_index: u32,
    event_type: u32,
    signature: &[u8; 16],
    algs: &[(u16, u16)],
) -> Vec<u8> {
    let mut data = signature.to_vec();
    data.extend(0u32.to_le_bytes()); // platform class
    data.extend([0, 2, 0, 2]); // minor, major, errata, UINTN size
    data.extend((algs.len() as u32).to_le_bytes());
    for (alg, size) in algs {
        data.extend(alg.to_le_bytes());
        data.extend(size.to_le_bytes());
    }
    data.push(0); // vendor info size
    let mut out = mr_index.to_le_bytes().to_vec();
    out.extend(event_type.to_le_bytes());
    out.extend([0u8; 20]);
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out
}

fn header(algs: &[(u16, u16)]) -> Vec<u8> {
    header_with(0, EV_NO_ACTION, SPEC_ID_SIGNATURE, algs)
}

/// A TCG_PCR_EVENT2 record with the given digests.
fn record(mr_index: u32, event_type: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
    let mut out = mr_index.to_le_bytes().to_vec();
    out.extend(event_type.to_le_bytes());
    out.extend((digests.len() as u32).to_le_bytes());
    for (alg, d) in digests {
        out.extend(alg.to_le_bytes());
        out.extend(d);
    }
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out
}

/// A SHA-384-only record whose digest is SHA-384 of its data, as firmware writes them.
fn event(mr_index: u32, event_type: u32, data: &[u8]) -> Vec<u8> {
    record(
        mr_index,
        event_type,
        &[(TPM_ALG_SHA384, sha384(data).to_vec())],
        data,
    )
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

/// The extend computed independently: one SHA-384 over the concatenation.
fn ext(reg: [u8; 48], digest: [u8; 48]) -> [u8; 48] {
    let mut both = reg.to_vec();
    both.extend(digest);
    Sha384::digest(&both).into()
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A log touching every RTMR, with an EV_NO_ACTION event and 0xFF padding, and its replay.
fn sample() -> (Vec<u8>, [[u8; 48]; 4]) {
    let mut log = header(&[(TPM_ALG_SHA384, 48)]);
    log.extend(event(
        1,
        0x8000_000A,
        b"\x03CFV\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    ));
    log.extend(event(1, 0x0000_0004, &[0, 0, 0, 0]));
    log.extend(event(
        2,
        0x8000_0007,
        b"Calling EFI Application from Boot Option",
    ));
    log.extend(event(
        3,
        0x0000_000D,
        b"kernel_cmdline: /vmlinuz console=ttyS0\0",
    ));
    log.extend(event(3, EV_NO_ACTION, b"not extended"));
    log.extend(event(4, 0x0000_000D, &utf16le("initrd=initrd.img quiet\0")));
    log.extend([0xFF; 300]);
    let z = [0u8; 48];
    let r0 = ext(
        ext(z, sha384(b"\x03CFV\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")),
        sha384(&[0, 0, 0, 0]),
    );
    let r1 = ext(z, sha384(b"Calling EFI Application from Boot Option"));
    let r2 = ext(z, sha384(b"kernel_cmdline: /vmlinuz console=ttyS0\0"));
    let r3 = ext(z, sha384(&utf16le("initrd=initrd.img quiet\0")));
    (log, [r0, r1, r2, r3])
}

#[test]
fn replay_matches_independent_computation() {
    let (log, expected) = sample();
    let parsed = parse(&log).unwrap();
    assert_eq!(parsed.events.len(), 6);
    assert_eq!(parsed.length, log.len() - 300);
    assert_eq!(
        parsed.spec_id.algorithms,
        vec![AlgorithmSize {
            algorithm: TPM_ALG_SHA384,
            digest_size: 48
        }]
    );
    assert_eq!(parsed.spec_id.spec_version, (2, 0, 0));
    assert_eq!(parsed.replay(), expected);
    let claims = check_rtmrs(&log, &expected).unwrap();
    assert_eq!(claims.len(), 6);
    assert!(claims.iter().all(|c| c.digest.len() == 48));
}

#[test]
fn claims_name_events_and_show_text() {
    let (log, expected) = sample();
    let claims = check_rtmrs(&log, &expected).unwrap();
    let c = &claims[0];
    assert_eq!((c.number, c.mr_index, c.register.as_str()), (1, 1, "RTMR0"));
    assert_eq!(
        c.event_type_name.as_deref(),
        Some("EV_EFI_PLATFORM_FIRMWARE_BLOB2")
    );
    assert_eq!(c.text.as_deref(), Some("CFV"));
    assert_eq!(
        c.digest,
        sha384(b"\x03CFV\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").to_vec()
    );
    assert_eq!(claims[1].event_type_name.as_deref(), Some("EV_SEPARATOR"));
    assert_eq!(claims[1].text, None);
    assert_eq!(
        claims[2].text.as_deref(),
        Some("Calling EFI Application from Boot Option")
    );
    assert_eq!(claims[2].register, "RTMR1");
    assert_eq!(
        claims[3].text.as_deref(),
        Some("kernel_cmdline: /vmlinuz console=ttyS0")
    );
    assert_eq!(claims[3].event_type_name.as_deref(), Some("EV_IPL"));
    assert!(!claims[4].replayed);
    assert_eq!(claims[4].event_type_name.as_deref(), Some("EV_NO_ACTION"));
    assert_eq!(claims[5].text.as_deref(), Some("initrd=initrd.img quiet"));
    assert_eq!(claims[5].register, "RTMR3");
    // Serializable, digest as hex.
    let json = serde_json::to_value(&claims[3]).unwrap();
    assert_eq!(json["event_type"], 0xD);
    assert_eq!(json["digest"], hex::encode(claims[3].digest.clone()));
    let back: EventClaim = serde_json::from_value(json).unwrap();
    assert_eq!(back, claims[3]);
}

#[test]
fn readable_forms_of_structured_events() {
    let mut var = hex::decode("61dfe48bca93d211aa0d00e098032b8c").unwrap();
    var.extend(10u64.to_le_bytes());
    var.extend(1u64.to_le_bytes());
    var.extend(utf16le("SecureBoot"));
    var.push(1);
    assert_eq!(
        readable_text(0x8000_0001, &var).as_deref(),
        Some("SecureBoot")
    );
    // A name longer than the data: no text, no panic.
    let mut short = var.clone();
    short[16] = 200;
    assert_eq!(readable_text(0x8000_0001, &short), None);
    let mut tagged = 0x8F3B_22EDu32.to_le_bytes().to_vec();
    tagged.extend(26u32.to_le_bytes());
    tagged.extend(b"LOADED_IMAGE::LoadOptions\0");
    assert_eq!(
        readable_text(0x6, &tagged).as_deref(),
        Some("LOADED_IMAGE::LoadOptions")
    );
    tagged[4] = 0xFF;
    assert_eq!(readable_text(0x6, &tagged), None);
    let mut table = vec![9u8];
    table.extend(b"TdxTable\0");
    table.extend(1u64.to_le_bytes());
    assert_eq!(
        readable_text(0x8000_000B, &table).as_deref(),
        Some("TdxTable")
    );
    // GRUB writes garbage after the NUL; binary data is not text.
    assert_eq!(
        readable_text(0xD, b"grub_cmd [  ]\0`").as_deref(),
        Some("grub_cmd [  ]")
    );
    assert_eq!(readable_text(0xD, &[0x01, 0x02, 0x03]), None);
    assert_eq!(
        readable_text(0x8000_0003, b"text but not a text event"),
        None
    );
    let long = "a".repeat(MAX_TEXT_CHARS + 10);
    let cut = readable_text(0xD, long.as_bytes()).unwrap();
    assert_eq!(cut.chars().count(), MAX_TEXT_CHARS + 1);
    assert_eq!(
        event_type_name(0x8000_0003),
        Some("EV_EFI_BOOT_SERVICES_APPLICATION")
    );
    assert_eq!(event_type_name(0x1234), None);
    assert_eq!(register_name(0), "MRTD");
}

#[test]
fn several_banks_and_zero_padding() {
    let data = b"Exit Boot Services Invocation";
    let digests = vec![
        (SHA256, Sha256::digest(data).to_vec()),
        (TPM_ALG_SHA384, sha384(data).to_vec()),
    ];
    let mut log = header(&[(SHA256, 32), (TPM_ALG_SHA384, 48)]);
    log.extend(record(2, 0x8000_0007, &digests, data));
    // The other order of the digests is as good.
    let swapped: Vec<_> = digests.iter().rev().cloned().collect();
    log.extend(record(2, 0x8000_0007, &swapped, data));
    let unpadded = log.clone();
    log.extend([0u8; 64]);
    let z = [0u8; 48];
    let rtmr1 = ext(ext(z, sha384(data)), sha384(data));
    for l in [&log, &unpadded] {
        let parsed = parse(l).unwrap();
        assert_eq!(parsed.events.len(), 2);
        assert_eq!(parsed.events[0].digests.len(), 2);
        assert_eq!(parsed.replay(), [z, rtmr1, z, z]);
    }
    // A header alone is an empty log that replays to zeros.
    let only = header(&[(TPM_ALG_SHA384, 48)]);
    assert_eq!(parse(&only).unwrap().replay(), [z; 4]);
    // MR index 0 EV_NO_ACTION events (GKE's firmware writes them) are kept, not replayed.
    let mut log0 = header(&[(TPM_ALG_SHA384, 48)]);
    log0.extend(event(0, EV_NO_ACTION, b"StartupLocality\0\0"));
    let parsed = parse(&log0).unwrap();
    assert_eq!(parsed.replay(), [z; 4]);
    assert_eq!(parsed.claims()[0].register, "MRTD");
}

#[test]
fn each_rtmr_mismatch_is_named_with_both_values() {
    let (log, expected) = sample();
    for i in 0..4 {
        let mut quote = expected;
        quote[i][47] ^= 1;
        let err = check_rtmrs(&log, &quote).unwrap_err();
        assert_eq!(
            err,
            EventLogError::Mismatch {
                rtmr: i,
                quote: hex::encode(quote[i]),
                replayed: hex::encode(expected[i]),
            }
        );
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("RTMR{i} does not match")), "{msg}");
        assert!(msg.contains(&hex::encode(quote[i])) && msg.contains(&hex::encode(expected[i])));
    }
    // A dropped event changes the replay too.
    let mut shorter = header(&[(TPM_ALG_SHA384, 48)]);
    shorter.extend(event(
        1,
        0x8000_000A,
        b"\x03CFV\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    ));
    assert!(matches!(
        check_rtmrs(&shorter, &expected),
        Err(EventLogError::Mismatch { rtmr: 0, .. })
    ));
}

#[test]
fn header_errors() {
    let sha = [(TPM_ALG_SHA384, 48)];
    assert_eq!(parse(&[]), Err(EventLogError::Empty));
    assert!(matches!(
        parse(&[1, 2, 3]),
        Err(EventLogError::Truncated { offset: 0, .. })
    ));
    assert_eq!(
        parse(&header_with(0, 4, SPEC_ID_SIGNATURE, &sha)),
        Err(EventLogError::HeaderEventType(4))
    );
    let err = parse(&header_with(0, 3, b"Spec ID Event02\0", &sha)).unwrap_err();
    assert_eq!(
        err,
        EventLogError::HeaderSignature("Spec ID Event02\\x00".into())
    );
    assert_eq!(parse(&header(&[])), Err(EventLogError::NoAlgorithms));
    assert_eq!(
        parse(&header(&[(SHA256, 32)])),
        Err(EventLogError::NoSha384("0x000b".into()))
    );
    assert_eq!(
        parse(&header(&[(0x0004, 20), (0x0012, 32)])),
        Err(EventLogError::NoSha384("0x0004, 0x0012".into()))
    );
    assert_eq!(
        parse(&header(&[(TPM_ALG_SHA384, 32)])),
        Err(EventLogError::Sha384Size(32))
    );
    assert_eq!(
        parse(&header(&[(TPM_ALG_SHA384, 48), (TPM_ALG_SHA384, 48)])),
        Err(EventLogError::DuplicateAlgorithm(TPM_ALG_SHA384))
    );
    assert_eq!(
        parse(&header(&[(TPM_ALG_SHA384, 48), (0x0027, 0)])),
        Err(EventLogError::ZeroDigestSize { algorithm: 0x0027 })
    );
    assert_eq!(
        parse(&header_with(5, 3, SPEC_ID_SIGNATURE, &sha)),
        Err(EventLogError::MrIndex {
            event: 0,
            offset: 0,
            index: 5
        })
    );
    // An unknown algorithm next to SHA-384 is fine: the header gives its size.
    let mut log = header(&[(0x00B0, 7), (TPM_ALG_SHA384, 48)]);
    log.extend(record(
        1,
        4,
        &[(0x00B0, vec![9; 7]), (TPM_ALG_SHA384, vec![1; 48])],
        &[0; 4],
    ));
    assert_eq!(parse(&log).unwrap().events[0].sha384, [1; 48]);
    // A header whose size runs past the log.
    let mut big = header(&sha);
    big[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        parse(&big),
        Err(EventLogError::EventSize {
            event: 0,
            size: u32::MAX,
            ..
        })
    ));
    // A header whose algorithm count runs past its own data.
    let mut count = header(&sha);
    count[HEADER_EVENT_FIXED + 24..HEADER_EVENT_FIXED + 28].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        parse(&count),
        Err(EventLogError::Truncated {
            what: "a Spec ID algorithm id",
            ..
        })
    ));
}

#[test]
fn event_errors() {
    let h = header(&[(TPM_ALG_SHA384, 48)]);
    let at = h.len();
    let with = |rec: Vec<u8>| {
        let mut l = h.clone();
        l.extend(event(1, 4, &[0; 4]));
        l.extend(rec);
        l
    };
    let second = at + event(1, 4, &[0; 4]).len();
    assert_eq!(
        parse(&with(event(5, 4, &[0; 4]))),
        Err(EventLogError::MrIndex {
            event: 2,
            offset: second,
            index: 5
        })
    );
    assert_eq!(
        parse(&with(event(0, 4, &[0; 4]))),
        Err(EventLogError::MrtdEvent {
            event: 2,
            offset: second,
            event_type: 4
        })
    );
    let two = record(
        1,
        4,
        &[(TPM_ALG_SHA384, vec![0; 48]), (TPM_ALG_SHA384, vec![0; 48])],
        &[],
    );
    assert_eq!(
        parse(&with(two)),
        Err(EventLogError::DigestCount {
            event: 2,
            offset: second,
            found: 2,
            expected: 1
        })
    );
    let none = record(1, 4, &[], &[]);
    assert!(matches!(
        parse(&with(none)),
        Err(EventLogError::DigestCount { found: 0, .. })
    ));
    let other = record(1, 4, &[(SHA256, vec![0; 32])], &[]);
    assert_eq!(
        parse(&with(other)),
        Err(EventLogError::UnlistedAlgorithm {
            event: 2,
            offset: second,
            algorithm: SHA256
        })
    );
    // Two banks listed, the same digest twice.
    let mut h2 = header(&[(SHA256, 32), (TPM_ALG_SHA384, 48)]);
    let off = h2.len();
    h2.extend(record(
        1,
        4,
        &[(TPM_ALG_SHA384, vec![0; 48]), (TPM_ALG_SHA384, vec![0; 48])],
        &[],
    ));
    assert_eq!(
        parse(&h2),
        Err(EventLogError::DuplicateDigest {
            event: 1,
            offset: off,
            algorithm: TPM_ALG_SHA384
        })
    );
    // An absurd event size.
    let mut absurd = event(1, 4, &[0; 4]);
    let size_at = absurd.len() - 8;
    absurd[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        parse(&with(absurd)),
        Err(EventLogError::EventSize {
            event: 2,
            offset: second,
            size: u32::MAX,
            remaining: 4
        })
    );
    // Bytes after the padding started are not padding: the "record" they make is refused.
    let mut garbage = with(Vec::new());
    garbage.extend([0xFF; 16]);
    garbage.extend(b"junk");
    assert!(matches!(
        parse(&garbage),
        Err(EventLogError::MrIndex {
            index: u32::MAX,
            ..
        })
    ));
    let mut zeros = with(Vec::new());
    zeros.extend([0; 16]);
    zeros.push(1);
    assert!(matches!(
        parse(&zeros),
        Err(EventLogError::DigestCount { found: 0, .. })
    ));
}

#[test]
fn every_truncation_and_flip_is_an_error_or_a_shorter_log() {
    let (log, _) = sample();
    let unpadded = &log[..log.len() - 300];
    for len in 0..unpadded.len() {
        // Only a cut at a record boundary parses; anything else is a typed error, never a panic.
        if let Ok(parsed) = parse(&unpadded[..len]) {
            assert_eq!(parsed.length, len);
        }
    }
    for i in 0..unpadded.len() {
        let mut flipped = unpadded.to_vec();
        flipped[i] ^= 0x80;
        let _ = parse(&flipped).map(|l| l.replay());
    }
}

const LIVE_LOG: &[u8] = include_bytes!("../../../../testdata/attestation/tdx/ccel_live.bin");
const LIVE_QUOTE: &[u8] =
    include_bytes!("../../../../testdata/attestation/tdx/ccel_live_quote.dat");
const TDREPORT_LOG: &[u8] =
    include_bytes!("../../../../testdata/attestation/tdx/ccel_live_tdreport_log.bin");
const TDREPORT: &[u8] =
    include_bytes!("../../../../testdata/attestation/tdx/ccel_live_tdreport.bin");

/// RTMR0..3 of a quote, read by the DCAP inspector (no signature check).
fn quote_rtmrs(quote: &[u8]) -> [[u8; 48]; 4] {
    let json = crate::dcap::inspect(quote).unwrap();
    std::array::from_fn(|i| {
        let hex = json["body"][format!("rtmr{i}")].as_str().unwrap();
        hex::decode(hex).unwrap().try_into().unwrap()
    })
}

#[test]
fn real_ccel_log_replays_to_its_quote() {
    let rtmrs = quote_rtmrs(LIVE_QUOTE);
    let claims = check_rtmrs(LIVE_LOG, &rtmrs).unwrap();
    assert_eq!(claims.len(), 20);
    assert_eq!(
        hex::encode(rtmrs[0]),
        "5aca07b1e885e17d1aeaf9d94edb2674767a61547cf8a49f26b73b4a43baeb04d147ba1953310852bbdcb13f0cfcac17"
    );
    let parsed = parse(LIVE_LOG).unwrap();
    assert_eq!(parsed.length, 2120);
    assert_eq!(parsed.spec_id.mr_index, 1);
    // What TDVF measured, as the claims show it.
    let texts: Vec<_> = claims
        .iter()
        .map(|c| (c.register.as_str(), c.text.as_deref()))
        .collect();
    assert_eq!(texts[0], ("RTMR0", Some("TdxTable")));
    assert_eq!(
        texts[1],
        ("RTMR0", Some("Fv(XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)"))
    );
    assert_eq!(texts[2], ("RTMR0", Some("SecureBoot")));
    assert_eq!(texts[8], ("RTMR0", Some("ACPI DATA")));
    assert_eq!(texts[12], ("RTMR0", Some("BootOrder")));
    assert_eq!(
        texts[14],
        ("RTMR1", Some("Calling EFI Application from Boot Option"))
    );
    assert_eq!(texts[16], ("RTMR2", Some("LOADED_IMAGE::LoadOptions")));
    assert_eq!(
        texts[19],
        ("RTMR1", Some("Exit Boot Services Returned with Success"))
    );
    assert_eq!(
        claims[11].event_type_name.as_deref(),
        Some("EV_EFI_BOOT_SERVICES_APPLICATION")
    );
    // The CFV digest the firmware logged (event 2) is SHA-384 of the firmware's variable store.
    assert_eq!(hex::encode(&claims[1].digest[..8]), "344bc51c980ba621",);
    // The other real log does not match this quote: RTMR2 differs.
    assert!(matches!(
        check_rtmrs(TDREPORT_LOG, &rtmrs),
        Err(EventLogError::Mismatch { rtmr: 2, .. })
    ));
}

#[test]
fn real_ccel_log_replays_to_its_tdreport() {
    // TDREPORT_STRUCT (Intel TDX Module ABI): TDINFO at 512; RTMR0..3 at TDINFO + 208, 48 bytes each.
    let rtmrs: [[u8; 48]; 4] =
        std::array::from_fn(|i| TDREPORT[720 + 48 * i..768 + 48 * i].try_into().unwrap());
    assert_eq!(check_rtmrs(TDREPORT_LOG, &rtmrs).unwrap().len(), 20);
}

#[test]
fn check_claims_uses_verified_tdx_claims() {
    use crate::{verify, Endorsements};
    use std::time::{Duration, UNIX_EPOCH};
    let quote = include_bytes!("../../../../testdata/attestation/tdx/tdx_quote");
    let collateral =
        include_bytes!("../../../../testdata/attestation/tdx/tdx_quote_collateral.json");
    let endorsements = Endorsements {
        dcap_collateral: Some(crate::dcap::DcapCollateral::from_json(collateral).unwrap()),
        ..Endorsements::default()
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_751_328_000); // 2025-07-01, inside its window
    let claims = verify(quote, &endorsements, now).unwrap();
    // The fixture quote came with no log: the live log does not replay to its RTMR0.
    let err = check_claims(&claims, LIVE_LOG).unwrap_err();
    assert_eq!(
        err,
        EventLogError::Mismatch {
            rtmr: 0,
            quote: hex::encode(&claims.runtime_measurements[0]),
            replayed: hex::encode(parse(LIVE_LOG).unwrap().replay()[0]),
        }
    );
    // The same claims carrying the live TD's RTMRs accept its log.
    let mut live = claims.clone();
    live.runtime_measurements = quote_rtmrs(LIVE_QUOTE).iter().map(|r| r.to_vec()).collect();
    assert_eq!(check_claims(&live, LIVE_LOG).unwrap().len(), 20);
    // Not TDX, or not four RTMRs.
    let mut sgx = live.clone();
    sgx.platform = Platform::Sgx;
    assert_eq!(
        check_claims(&sgx, LIVE_LOG),
        Err(EventLogError::NotTdx(Platform::Sgx))
    );
    let mut three = live.clone();
    three.runtime_measurements.pop();
    assert_eq!(
        check_claims(&three, LIVE_LOG),
        Err(EventLogError::ClaimsRtmrs(
            "3 values of [48, 48, 48] bytes".into()
        ))
    );
    let mut short = live;
    short.runtime_measurements[1].pop();
    assert!(matches!(
        check_claims(&short, LIVE_LOG),
        Err(EventLogError::ClaimsRtmrs(_))
    ));
}
