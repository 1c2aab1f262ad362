//! The simulated launch measurement of a KBS: what a party pins in its KBS policy when the KBS
//! runs on the simulated TEE (`cordon kbs serve --tee sim`).
//!
//! A runtime's sim measurement covers its binary and its configuration file
//! (`cordon_tee::sim_launch_measurement`). A KBS has no configuration file; what it is told on the
//! command line that decides which evidence it believes is its list of sim trust anchors, so its
//! measured configuration is that list in a canonical text form ([`sim_measured_config`]). A party
//! computes the same value with `cordon kbs measure`.

use cordon_tee::{sim_launch_measurement, TeeError};
use std::path::Path;

/// First line of a KBS's measured configuration.
pub const SIM_CONFIG_HEADER: &str = "cordon kbs sim config v1\n";

/// The KBS's measured configuration: [`SIM_CONFIG_HEADER`], then one line
/// `sim_trust_anchor <64 hex>\n` per trust anchor, sorted and without duplicates (so the order in
/// which `--sim-trust-anchor` was given does not change the measurement).
pub fn sim_measured_config(sim_trust_anchors: &[[u8; 32]]) -> Vec<u8> {
    let mut anchors: Vec<[u8; 32]> = sim_trust_anchors.to_vec();
    anchors.sort_unstable();
    anchors.dedup();
    let mut text = SIM_CONFIG_HEADER.to_string();
    for a in &anchors {
        text.push_str("sim_trust_anchor ");
        text.push_str(&hex::encode(a));
        text.push('\n');
    }
    text.into_bytes()
}

/// The sim launch measurement of the KBS binary `binary` run with `sim_trust_anchors`.
pub fn sim_kbs_measurement(
    binary: &Path,
    sim_trust_anchors: &[[u8; 32]],
) -> Result<[u8; 48], TeeError> {
    sim_launch_measurement(binary, &sim_measured_config(sim_trust_anchors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_config_is_canonical_and_covers_every_anchor() {
        let (a, b) = ([0xaa; 32], [0x01; 32]);
        let text = sim_measured_config(&[a, b, a]);
        assert_eq!(text, sim_measured_config(&[b, a]));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            format!(
                "cordon kbs sim config v1\nsim_trust_anchor {}\nsim_trust_anchor {}\n",
                "01".repeat(32),
                "aa".repeat(32)
            )
        );
        assert_ne!(sim_measured_config(&[a]), sim_measured_config(&[a, b]));
        assert_eq!(sim_measured_config(&[]), SIM_CONFIG_HEADER.as_bytes());
    }
}
