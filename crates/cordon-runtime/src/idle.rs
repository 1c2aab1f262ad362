//! How this machine's idle CPUs wait for work, which sets the floor under a lone request's latency.
//!
//! A request that reaches an idle vCPU has to wake it. In a VM whose idle vCPUs halt (`HLT` traps
//! to the hypervisor), that wake-up is an interrupt sent through the hypervisor: 20–35 µs each on
//! the machine of docs/benchmarks.md, paid once by the request and once by its answer. Linux's
//! `cpuidle-haltpoll` driver polls for a while before it halts (`guest_halt_poll_ns`, 200 µs by
//! default), so work that follows closely finds the vCPU awake. Some VM images switch the polling
//! off (`haltpoll.guest_halt_poll_ns=0` on the kernel command line); the runtime says so at boot
//! and the serving benchmark prints it beside its figures.

use std::fmt;
use std::path::Path;

/// The guest's idle driver and its polling window, as `/sys` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleWait {
    /// `/sys/devices/system/cpu/cpuidle/current_driver`, when readable.
    pub driver: Option<String>,
    /// `/sys/module/haltpoll/parameters/guest_halt_poll_ns`, when the haltpoll module is present.
    pub halt_poll_ns: Option<u64>,
}

impl IdleWait {
    /// Reads this machine's settings.
    pub fn read() -> Self {
        Self::read_from(Path::new("/sys"))
    }

    /// Reads the settings under `sys` (a sysfs root); what is missing or unreadable is `None`.
    pub fn read_from(sys: &Path) -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(sys.join(p))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Self {
            driver: read("devices/system/cpu/cpuidle/current_driver"),
            halt_poll_ns: read("module/haltpoll/parameters/guest_halt_poll_ns")
                .and_then(|s| s.parse().ok()),
        }
    }

    /// Idle vCPUs halt at once: every wake-up from idle is a trip through the hypervisor.
    pub fn halts_without_polling(&self) -> bool {
        self.driver.as_deref() == Some("haltpoll") && self.halt_poll_ns == Some(0)
    }

    /// The boot-time advice when [`Self::halts_without_polling`], else `None`.
    pub fn advice(&self) -> Option<String> {
        self.halts_without_polling().then(|| {
            format!(
                "idle vCPUs halt without polling ({self}): each request that finds the runtime idle \
                 pays two wake-ups through the hypervisor (tens of µs); for low single-request \
                 latency set haltpoll.guest_halt_poll_ns=200000 (the kernel's default) on the guest \
                 kernel command line (docs/benchmarks.md, \"Idle vCPUs\")"
            )
        })
    }
}

impl fmt::Display for IdleWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpuidle driver {}",
            self.driver.as_deref().unwrap_or("unknown")
        )?;
        if let Some(ns) = self.halt_poll_ns {
            write!(f, ", guest_halt_poll_ns={ns}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(driver: Option<&str>, poll: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(d) = driver {
            let p = dir.path().join("devices/system/cpu/cpuidle");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("current_driver"), format!("{d}\n")).unwrap();
        }
        if let Some(n) = poll {
            let p = dir.path().join("module/haltpoll/parameters");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("guest_halt_poll_ns"), format!("{n}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn haltpoll_with_polling_off_gets_advice() {
        let dir = sysfs(Some("haltpoll"), Some("0"));
        let idle = IdleWait::read_from(dir.path());
        assert_eq!(
            idle.to_string(),
            "cpuidle driver haltpoll, guest_halt_poll_ns=0"
        );
        assert!(idle.halts_without_polling());
        let advice = idle.advice().unwrap();
        assert!(advice.contains("guest_halt_poll_ns=200000"), "{advice}");
    }

    #[test]
    fn haltpoll_that_polls_gets_none() {
        let idle = IdleWait::read_from(sysfs(Some("haltpoll"), Some("200000")).path());
        assert_eq!(idle.halt_poll_ns, Some(200_000));
        assert!(!idle.halts_without_polling());
        assert_eq!(idle.advice(), None);
    }

    #[test]
    fn other_drivers_and_missing_files_get_none() {
        // Bare metal or a VM without haltpoll: nothing this module knows how to advise.
        let idle = IdleWait::read_from(sysfs(Some("intel_idle"), None).path());
        assert_eq!(idle.to_string(), "cpuidle driver intel_idle");
        assert_eq!(idle.advice(), None);
        let none = IdleWait::read_from(sysfs(None, None).path());
        assert_eq!(none.to_string(), "cpuidle driver unknown");
        assert_eq!(none.advice(), None);
    }

    #[test]
    fn unparsable_window_is_unknown_not_zero() {
        let idle = IdleWait::read_from(sysfs(Some("haltpoll"), Some("lots")).path());
        assert_eq!(idle.halt_poll_ns, None);
        assert!(!idle.halts_without_polling());
    }
}
