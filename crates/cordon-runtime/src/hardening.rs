//! Process hardening of the runtime: its memory holds service keys, DEKs and plaintext models,
//! datasets and requests, so it must not end up in a core dump, be readable by other processes
//! of the same user (ptrace, /proc/pid/mem), or be swapped to disk.
//!
//! - `PR_SET_DUMPABLE = 0`: no core dump, and /proc/pid/mem and ptrace are closed to other
//!   processes of the same uid (root with CAP_SYS_PTRACE excepted, as always).
//! - `RLIMIT_CORE = 0`: no core file even if something re-enables dumping.
//! - `mlockall(MCL_CURRENT | MCL_FUTURE)` only when `RLIMIT_MEMLOCK` is unlimited or at least
//!   [`MLOCK_MINIMUM`]: with a small limit, locking future pages would make later allocations
//!   fail, so the runtime reports that memory is not locked instead.
//!
//! Inside a confidential VM the host cannot read guest memory anyway; this guards against the
//! guest's own other processes and against swap, and it is what an SGX-less deployment has.

use rustix::process::{Resource, Rlimit};

/// Below this `RLIMIT_MEMLOCK`, memory is not locked (models and batches need more).
pub const MLOCK_MINIMUM: u64 = 1 << 30;

/// What [`harden_process`] could apply; each field says why when it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    pub core_dumps_disabled: Result<(), String>,
    pub memory_locked: Result<(), String>,
}

/// Applies what the OS allows; never fails the process.
pub fn harden_process() -> Hardening {
    let core_dumps_disabled =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .map_err(|e| format!("PR_SET_DUMPABLE: {e}"))
            .and_then(|()| {
                rustix::process::setrlimit(
                    Resource::Core,
                    Rlimit {
                        current: Some(0),
                        maximum: Some(0),
                    },
                )
                .map_err(|e| format!("RLIMIT_CORE: {e}"))
            });
    let memlock = rustix::process::getrlimit(Resource::Memlock);
    let memory_locked = match memlock.current {
        Some(limit) if limit < MLOCK_MINIMUM => Err(format!(
            "RLIMIT_MEMLOCK is {limit} bytes (at least {MLOCK_MINIMUM} or unlimited needed); \
             raise it (e.g. `ulimit -l unlimited`, LimitMEMLOCK=infinity) to keep secrets out of swap"
        )),
        _ => rustix::mm::mlockall(
            rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE,
        )
        .map_err(|e| format!("mlockall: {e}")),
    };
    Hardening {
        core_dumps_disabled,
        memory_locked,
    }
}
