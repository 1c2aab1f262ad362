//! Emulated TEE platforms, for tests and CI only: evidence in the real hardware formats, signed by
//! a test PKI made on the spot, so that the hardware code paths (configfs-tsm, certificate chains,
//! TCB checks, report_data binding) run without the hardware. Such evidence verifies only where the
//! endorsements name the emulated root, and its claims are never hardware-backed: tools print
//! EMULATED, NOT hardware-backed.

pub mod tdx;
