//! Emulated TEE platforms, for tests and CI: evidence in the hardware formats, genuine structures
//! signed by a test root chain made here instead of by AMD's or Intel's hardware. It goes through the
//! same providers (configfs-tsm) and the same verification as real evidence, and proves that those
//! code paths work; it proves nothing about any hardware. Verifiers accept it only when the caller
//! names the test root (`Endorsements::emulated_roots`), their claims are never hardware-backed, and
//! an appraisal policy accepts them only when it names the root too: every tool says EMULATED.

pub mod snp;
pub mod tdx;
pub(crate) mod tsm;

pub use snp::{
    EmulatedSnp, EmulatedSnpOptions, FirmwareVersion, LaunchParams, SnpEmulatorError, SnpTcb,
};
