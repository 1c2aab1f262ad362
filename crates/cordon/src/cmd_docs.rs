//! `cordon completions SHELL` and `cordon man --out DIR`: shell completion scripts and man pages,
//! both generated from the clap definition of the command line, so they cannot drift from it.

use crate::util;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for (on stdout).
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages to (created if missing): cordon.1, and one page per command
    /// and subcommand (cordon-seal.1, cordon-kbs-serve.1, ...).
    #[arg(long)]
    out: PathBuf,
    /// Replace pages that exist already.
    #[arg(long)]
    force: bool,
}

pub fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    use std::io::Write;
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, name, &mut script);
    // `cordon completions bash | head` is not an error.
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the completion script"),
    }
}

/// Every page of `cmd` and its subcommands (not `help`), as (file name, roff text).
pub fn man_pages(cmd: clap::Command) -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, pages)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)?;
        pages.push((man.get_filename(), text));
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(cmd, &mut pages)?;
    pages.sort();
    Ok(pages)
}

pub fn man(a: ManArgs, cmd: clap::Command) -> Result<()> {
    let pages = man_pages(cmd)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // All or nothing: refuse before writing anything.
    if !a.force {
        if let Some((name, _)) = pages.iter().find(|(n, _)| exists(&a.out.join(n))) {
            bail!(
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                a.out.join(name).display()
            );
        }
    }
    for (name, text) in &pages {
        util::write_atomic(&a.out.join(name), text)?;
    }
    println!(
        "wrote {} man pages to {} (cordon.1 and one per command)",
        pages.len(),
        a.out.display()
    );
    Ok(())
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Exit statuses of most commands.
const EXIT_DEFAULT: &str =
    "Exit status: 0 success; 1 failure (the reason on stderr); 2 usage error (a bad flag or value).";
/// Exit statuses of the servers, which run until stopped.
const EXIT_SERVER: &str =
    "Exit status: 0 stopped by SIGINT or SIGTERM; 1 failed to start or to serve \
(the reason on stderr); 2 usage error.";
/// Exit statuses of `attest inspect|fetch|report`.
const EXIT_ATTEST: &str =
    "Exit status: 0 success; 2 unusable input, a failure (the reason on stderr) \
or a usage error.";

/// The examples of every leaf command, by its path below `cordon`, and its exit statuses: shown
/// after its options in `--help` and in its man page (docs/cli.md lists the same).
pub const EXAMPLES: &[(&str, &str, &str)] = &[
    ("quickstart", "cordon quickstart\n\
cordon quickstart --emulate snp --data-dir /tmp/cq", EXIT_DEFAULT),
    ("keygen", "cordon keygen                       # ~/.config/cordon/owner.key and owner.pub\n\
cordon keygen --out owner.key --json", EXIT_DEFAULT),
    ("seal", "cordon seal model.onnx --out model.sealed --key-out model.dek --name fraud --version 3\n\
cat model.onnx | cordon seal - --out - --key-out model.dek --name fraud > model.sealed", EXIT_DEFAULT),
    ("unseal", "cordon unseal model.sealed --key model.dek --out check.onnx\n\
cordon unseal model.sealed --key model.dek --out - | sha256sum", EXIT_DEFAULT),
    ("inspect", "cordon inspect model.sealed\n\
cordon inspect model.sealed --json | jq -r .manifest_sha256", EXIT_DEFAULT),
    ("kbs serve", "cordon kbs serve --data-dir kbs --sim-trust-anchor sim-hw.pub \\\n    \
--init-admin-token-file admin.token --identity-file kbs.pub\n\
cordon kbs serve --data-dir kbs --listen 0.0.0.0:8100 --tls-cert kbs.crt --tls-key kbs.pem", EXIT_SERVER),
    ("kbs identity", "cordon kbs identity                 # the local KBS, http://127.0.0.1:8100\n\
cordon kbs identity --kbs https://kbs:8100 --kbs-policy kbs-policy.toml", EXIT_DEFAULT),
    ("kbs register", "cordon kbs register --token-file admin.token --kbs-key kbs.pub --key model.dek \
--policy release.toml\n\
cordon kbs register --kbs https://kbs:8100 --token-file admin.token --key model.dek --policy release.toml --json",
        EXIT_DEFAULT),
    ("kbs audit", "cordon kbs audit --token-file admin.token\n\
cordon kbs audit --token-file admin.token --verify --since cp.json --checkpoint-out cp.json\n\
cordon kbs audit --token-file admin.token --verify --entries events.json --checkpoint cp.json", EXIT_DEFAULT),
    ("kbs keys", "cordon kbs keys --token-file admin.token\n\
cordon kbs keys --kbs https://kbs:8100 --token-file admin.token --json", EXIT_DEFAULT),
    ("kbs revoke", "cordon kbs revoke fraud-3 --reason \"model withdrawn\" --token-file admin.token", EXIT_DEFAULT),
    ("kbs rotate-kek", "cordon kbs rotate-kek --data-dir kbs --new-kek file:kbs-2.kek", EXIT_DEFAULT),
    ("kbs rotate-identity", "cordon kbs rotate-identity --data-dir kbs --token-file admin.token \
--identity-file kbs.pub", EXIT_DEFAULT),
    ("kbs measure", "cordon kbs measure --sim-trust-anchor sim-hw.pub", EXIT_DEFAULT),
    ("runtime serve", "cordon runtime serve --config runtime.toml --platform sim --sim-hardware-key sim-hw.key\n\
cordon runtime serve --config runtime.toml --platform hardware --listen 0.0.0.0:8200", EXIT_SERVER),
    ("runtime measure", "cordon runtime measure --config runtime.toml\n\
cordon runtime measure --config runtime.toml --json", EXIT_DEFAULT),
    ("sim keygen", "cordon sim keygen                   # ~/.config/cordon/sim-hardware.key and .pub\n\
cordon sim keygen --out sim-hw.key", EXIT_DEFAULT),
    ("attest verify", "cordon attest verify report.bin --cert vcek.der --crl milan.crl\n\
cordon attest verify quote.bin --collateral collateral.json --policy p.toml --json\n\
cordon attest verify report.bin --cert vcek.der --at 2025-01-01T00:00:00Z",
        "Exit status: 0 verified and accepted by the policy; 1 rejected (every reason on stderr); \
2 unusable input or usage error."),
    ("attest inspect", "cordon attest inspect quote.bin\n\
cordon attest inspect - --json < report.bin", EXIT_ATTEST),
    ("attest fetch", "cordon attest fetch report.bin --out endorsements/\n\
cordon attest fetch quote.bin --out collateral/ --pcs-url https://pccs:8081 --cache ~/.cache/cordon", EXIT_ATTEST),
    ("attest report", "cordon attest report --out evidence.bin\n\
cordon attest report --out - --report-data 00ff | cordon attest inspect -", EXIT_ATTEST),
    ("emulator init", "cordon emulator init --platform snp --dir emu\n\
cordon emulator init --platform tdx --dir emu-tdx", EXIT_DEFAULT),
    ("emulator launch", "cordon emulator launch --dir emu --config runtime.toml\n\
cordon emulator launch --dir emu --config runtime.toml --tcb-status out-of-date", EXIT_DEFAULT),
    ("emulator show", "cordon emulator show --dir emu", EXIT_DEFAULT),
    ("policy new", "cordon policy new --platform snp --measurement <digest> --runtime-config runtime.toml \\\n    \
--release-out release.toml --client-out client.toml\n\
cordon policy new --platform sim --measurement <digest> --sim-trust-anchor sim-hw.pub \\\n    \
--release-out release.toml --client-out -", EXIT_DEFAULT),
    ("infer", "cordon infer --runtime http://127.0.0.1:8200 --policy client.toml --model fraud --input request.json\n\
echo '{\"inputs\":[...]}' | cordon infer --runtime http://127.0.0.1:8200 --policy client.toml --model fraud --input -",
        EXIT_DEFAULT),
    ("verify-response", "curl -s \"http://127.0.0.1:8200/v1/attestation?nonce=$NONCE\" > attestation.json\n\
cordon verify-response --attestation attestation.json --nonce $NONCE --policy client.toml \\\n    \
--request request.json --response stream.txt\n\
cordon verify-response --attestation attestation.json --nonce $NONCE --policy client.toml \\\n    \
--request request.json --response completion.json --signature \"$CORDON_SIGNATURE\"", EXIT_DEFAULT),
    ("proxy", "cordon proxy --upstream http://127.0.0.1:8200 --policy client.toml\n\
cordon proxy --upstream https://runtime:8200 --ca-cert ca.pem --policy client.toml --listen 127.0.0.1:9000\n\
cordon proxy --upstream http://127.0.0.1:8200 --policy client.toml --grpc-listen 127.0.0.1:8301",
        EXIT_SERVER),
    ("dev up", "cordon dev up\n\
cordon dev up --kbs-port 0 --runtime-port 0     # any free ports\n\
cordon dev up --emulate tdx --data-dir /tmp/cordon-dev", EXIT_SERVER),
    ("model run", "cordon model run model.onnx --input request.json --describe\n\
cordon model run model.onnx --input - < request.json", EXIT_DEFAULT),
    ("model examples", "cordon model examples --out models/", EXIT_DEFAULT),
    ("demo hospitals", "cordon demo hospitals\n\
cordon demo hospitals --algorithm logistic_regression --emulate snp", EXIT_DEFAULT),
    ("party keygen", "cordon party keygen --name hospital-a --out hospital-a.party > hospital-a.json", EXIT_DEFAULT),
    ("dataset seal", "cordon dataset seal --party hospital-a.party --input records.csv --out records.sealed \
--key-out records.dek", EXIT_DEFAULT),
    ("dataset register", "cordon dataset register --party hospital-a.party --key records.dek \
--policy release.toml --kbs-key kbs.pub", EXIT_DEFAULT),
    ("dataset upload", "cordon dataset upload --party hospital-a.party --runtime http://127.0.0.1:8300 \
--policy client.toml --sealed records.sealed", EXIT_DEFAULT),
    ("job create", "cordon job create --party hospital-a.party --runtime http://127.0.0.1:8300 \
--policy client.toml --spec job.json", EXIT_DEFAULT),
    ("job approve", "cordon job approve --party hospital-b.party --runtime http://127.0.0.1:8300 \
--policy client.toml --job <hash> --spec job.json", EXIT_DEFAULT),
    ("job submit", "cordon job submit --party hospital-a.party --runtime http://127.0.0.1:8300 \
--policy client.toml --job <hash> --wait 600", EXIT_DEFAULT),
    ("job status", "cordon job status --party hospital-a.party --runtime http://127.0.0.1:8300 \
--policy client.toml --job <hash> --json", EXIT_DEFAULT),
    ("job result", "cordon job result --party hospital-a.party --runtime http://127.0.0.1:8300 \
--policy client.toml --job <hash> --out-dir result/", EXIT_DEFAULT),
    ("job receipt verify", "cordon job receipt verify --receipt result/receipt.json --policy client.toml", EXIT_DEFAULT),
    ("measure snp", "cordon measure snp --ovmf OVMF.amdsev.fd --kernel vmlinuz --initrd initrd.img \
--append 'console=ttyS0' --vcpus 4 --vcpu-type EPYC-Milan\n\
cordon measure snp --ovmf OVMF.fd --vcpus 2 --vcpu-type EPYC-v4 --json", EXIT_DEFAULT),
    ("measure runtime", "cordon measure runtime --config runtime.toml --platform snp\n\
cordon measure runtime --config runtime.toml --platform tdx --json", EXIT_DEFAULT),
    ("measure tdx", "cordon measure tdx --tdvf OVMF.inteltdx.fd\n\
cordon measure tdx --event-log ccel.bin --quote quote.bin --json", EXIT_DEFAULT),
    ("bench seal", "cargo build --release -p cordon && ./target/release/cordon bench seal --size-mib 1024", EXIT_DEFAULT),
    ("bench attest", "./target/release/cordon bench attest --seconds 2", EXIT_DEFAULT),
    ("bench serve", "RUST_LOG=error ./target/release/cordon bench serve\n\
./target/release/cordon bench serve --concurrency 64 --seconds 10 --json", EXIT_DEFAULT),
    ("bench train", "./target/release/cordon bench train --rows 100000 --algorithms gbdt", EXIT_DEFAULT),
    ("bench trees", "./target/release/cordon bench trees --calls 500 --json", EXIT_DEFAULT),
    ("bench dense", "./target/release/cordon bench dense --threads 2 --no-tract", EXIT_DEFAULT),
    ("bench kbs", "./target/release/cordon bench kbs --clients 1,8,64 --seconds 5\n\
./target/release/cordon bench kbs --quick --json results.json", EXIT_DEFAULT),
    ("completions", "cordon completions bash > ~/.local/share/bash-completion/completions/cordon\n\
cordon completions zsh > \"${fpath[1]}/_cordon\"\n\
cordon completions fish > ~/.config/fish/completions/cordon.fish", EXIT_DEFAULT),
    ("man", "cordon man --out ~/.local/share/man/man1 && man cordon-kbs-serve\n\
cordon man --out target/man --force", EXIT_DEFAULT),
];

/// What `cordon --help` says after the commands: the exit statuses, the environment, the
/// default paths.
pub const TOP_AFTER_LONG_HELP: &str = "Exit status: 0 success; 1 failure (the reason on stderr); \
2 usage error (a bad flag or value). `attest` commands: 2 also for unusable input, and `attest verify` \
1 for rejected evidence. Each command's --help says its own.

Environment:
  CORDON_LOG               log filter (e.g. `error`, `info`, `cordon_kbs=debug`); RUST_LOG is read
                           when it is unset; default `info`. Logs go to stderr.
  CORDON_KBS_URL           --kbs (default http://127.0.0.1:8100, the local `kbs serve`)
  CORDON_KBS_KEY           --kbs-key: the KBS's pinned identity key
  CORDON_KBS_POLICY        --kbs-policy
  CORDON_ADMIN_TOKEN_FILE  --token-file
  CORDON_OWNER_KEY         seal --owner-key
  CORDON_CA_CERT           --ca-cert
  CORDON_KBS_DATABASE_URL  kbs serve|rotate-* --database-url
  CORDON_KBS_KEK           kbs serve|rotate-identity --kek
  CORDON_ONNXRUNTIME_LIB   where tools and tests find ONNX Runtime's library
  XDG_CONFIG_HOME          keys default to $XDG_CONFIG_HOME/cordon (else ~/.config/cordon); the
                           old ~/.cordon is still read

Shell completions: `cordon completions bash|zsh|fish|elvish|powershell`; man pages: `cordon man --out DIR`.";

/// The command line with every leaf command's examples and exit statuses after its options.
pub fn with_examples(cmd: clap::Command) -> clap::Command {
    fn walk(cmd: clap::Command, path: &str) -> clap::Command {
        let cmd = cmd.mut_subcommands(|sub| {
            let p = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            walk(sub, &p)
        });
        match EXAMPLES.iter().find(|(p, _, _)| *p == path) {
            Some((_, examples, exit)) => {
                let indented: String = examples.lines().map(|l| format!("  {l}\n")).collect();
                cmd.after_help(format!("Examples:\n{indented}\n{exit}"))
            }
            None => cmd,
        }
    }
    walk(cmd, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command without subcommands, by its path below `cordon`.
    fn leaves(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let mut any = false;
        for sub in cmd.get_subcommands() {
            any = true;
            let p = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            leaves(sub, &p, out);
        }
        if !any {
            out.push(path.to_string());
        }
    }

    #[test]
    fn every_leaf_command_has_examples_and_exit_statuses_in_its_help() {
        let cmd = crate::command();
        let mut all = Vec::new();
        leaves(&cmd, "", &mut all);
        assert!(all.len() > 40, "{all:?}");
        let mut missing = Vec::new();
        for path in &all {
            let mut sub = cmd.clone();
            for name in path.split(' ') {
                sub = sub.find_subcommand(name).unwrap().clone();
            }
            let help = sub.render_long_help().to_string();
            if !help.contains("Examples:\n  ") {
                missing.push(path.clone());
            }
            assert!(help.contains("Exit status:"), "{path}: no exit status");
        }
        assert!(
            missing.is_empty(),
            "leaf commands without Examples: {missing:?}"
        );
        // No example is kept for a command that no longer exists.
        for (path, _, _) in EXAMPLES {
            assert!(
                all.iter().any(|p| p == path),
                "examples for unknown command {path}"
            );
        }
    }

    #[test]
    fn docs_cli_md_lists_every_leaf_command() {
        let doc = include_str!("../../../docs/cli.md");
        let mut all = Vec::new();
        leaves(&crate::command(), "", &mut all);
        let missing: Vec<_> = all
            .iter()
            .filter(|p| !doc.contains(&format!("`cordon {p}`")))
            .collect();
        assert!(missing.is_empty(), "docs/cli.md does not list {missing:?}");
    }
}
