//! AMD KDS: a VCEK-signed SEV-SNP report's VCEK, and its product line's CRL.
//!
//! AMD, "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface Specification"
//! (publication 57230): `GET /vcek/v1/{product_name}/{hwid}?blSPL=…&teeSPL=…&snpSPL=…&ucodeSPL=…`
//! (DER), where hwid is CHIP_ID in lower-case hex; for Turin, hwid is the first 8 bytes of CHIP_ID
//! and the query starts with `fmcSPL`. `GET /vcek/v1/{product_name}/crl` (DER). VLEKs
//! (`/vlek/v1/…`) need the cloud provider's credentials and are not fetched.

use crate::http::{Freshness, Response};
use crate::{create_out_dir, trim_base, write_output, Endorsement, FetchError, Fetcher, Source};
use cordon_attest::snp::{AttestationReport, Product, SigningKey, TcbVersion};
use der::Decode;
use std::path::Path;

/// The KDS path and query of a VCEK (after the base URL): the product line's name, the hwID in
/// lower-case hex (Turin: first 8 bytes of CHIP_ID), and the SPLs of `tcb` (REPORTED_TCB decoded
/// for the product line).
pub fn vcek_path(product: Product, chip_id: &[u8; 64], tcb: &TcbVersion) -> String {
    let spl = format!(
        "blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
    );
    match product {
        Product::Turin => format!(
            "/vcek/v1/Turin/{}?fmcSPL={}&{spl}",
            hex::encode(&chip_id[..8]),
            tcb.fmc.unwrap_or(0)
        ),
        Product::Milan | Product::Genoa => {
            format!("/vcek/v1/{}/{}?{spl}", product.name(), hex::encode(chip_id))
        }
    }
}

/// The product line: the option's, the report's CPUID (v3+), both (they must agree), or neither
/// (an error).
fn product(report: &AttestationReport, given: Option<Product>) -> Result<Product, FetchError> {
    match (report.product_from_cpuid(), given) {
        (Some(r), Some(g)) if r != g => Err(FetchError::ProductMismatch {
            report: r.name(),
            given: g.name(),
        }),
        (Some(p), _) | (None, Some(p)) => Ok(p),
        (None, None) => Err(FetchError::UnknownProduct {
            version: report.version,
        }),
    }
}

pub(crate) async fn fetch(
    fetcher: &Fetcher,
    bytes: &[u8],
    out: &Path,
    sources: &mut Vec<Source>,
) -> Result<Endorsement, FetchError> {
    let report =
        AttestationReport::parse(bytes).map_err(|e| FetchError::Evidence(e.to_string()))?;
    match report.signing_key {
        SigningKey::Vcek => {}
        SigningKey::Vlek => return Err(FetchError::VlekNotFetchable),
        SigningKey::None => {
            return Err(FetchError::Evidence(
                "the SNP report is not signed (SIGNING_KEY = none): there is no key to fetch"
                    .into(),
            ))
        }
    }
    let product = product(&report, fetcher.opts.product)?;
    if report.mask_chip_key || report.chip_id.iter().all(|&b| b == 0) {
        return Err(FetchError::MaskedChipId);
    }
    let tcb = TcbVersion::decode(report.reported_tcb, product);
    let base = trim_base(&fetcher.opts.kds_url);

    let vcek_url = format!("{base}{}", vcek_path(product, &report.chip_id, &tcb));
    let vcek = fetcher
        .http
        .get(&vcek_url, Freshness::Forever, sources, |r| {
            certificate(r).map(|()| r.body.clone())
        })
        .await?;
    let crl_url = format!("{base}/vcek/v1/{}/crl", product.name());
    let crl = fetcher
        .http
        .get(&crl_url, Freshness::MaxAge, sources, |r| {
            crl(r).map(|()| r.body.clone())
        })
        .await?;

    create_out_dir(out)?;
    Ok(Endorsement::Snp {
        product,
        vcek: write_output(out, "vcek.der", &vcek)?,
        crl: write_output(out, "crl.der", &crl)?,
    })
}

/// The body parses as an X.509 certificate (DER or PEM). Whether it is the right one, and
/// trusted, is verification's business.
fn certificate(r: &Response) -> Result<(), FetchError> {
    cordon_attest::snp::parse_certificate(&r.body)
        .map(|_| ())
        .map_err(|e| FetchError::BadBody {
            url: r.url.clone(),
            reason: e.to_string(),
        })
}

/// The body parses as a DER CRL.
fn crl(r: &Response) -> Result<(), FetchError> {
    x509_cert::crl::CertificateList::from_der(&r.body)
        .map(|_| ())
        .map_err(|e| FetchError::BadBody {
            url: r.url.clone(),
            reason: format!("not a DER CRL: {e}"),
        })
}
