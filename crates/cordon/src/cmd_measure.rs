//! `cordon measure`: reference values computed from images, for policies to pin before any guest
//! has run. The computation lives in `cordon-measure` (and, for event logs, `cordon-attest`).

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum MeasureCommand {
    /// Intel TDX: MRTD from a TDVF firmware image; RTMR0..3 replayed from a CCEL event log,
    /// optionally checked against a quote.
    Tdx(crate::cmd_measure_tdx::TdxArgs),
}

pub fn run(c: MeasureCommand) -> Result<()> {
    match c {
        MeasureCommand::Tdx(a) => crate::cmd_measure_tdx::run(a),
    }
}
