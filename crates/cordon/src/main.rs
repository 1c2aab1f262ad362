//! `cordon`: the command-line interface. Logic lives in the library crates; this binary parses
//! arguments, reads files and prints.

mod cmd_attest;
mod cmd_bench;
mod cmd_bench_dense;
mod cmd_bench_kbs;
mod cmd_bench_serve;
mod cmd_bench_train;
mod cmd_bench_trees;
mod cmd_demo;
mod cmd_dev;
mod cmd_docs;
mod cmd_fetch;
mod cmd_infer;
mod cmd_job;
mod cmd_kbs;
mod cmd_measure;
mod cmd_measure_tdx;
mod cmd_model;
mod cmd_policy;
mod cmd_proxy;
mod cmd_runtime;
mod cmd_seal;
mod cmd_verify_response;
mod deploy;
mod emulator;
mod output;
mod quickstart;
mod util;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cordon",
    version,
    about = "Confidential AI: sealed models, attested runtimes, keys released only to verified TEEs",
    long_about = "Cordon seals models, releases their keys only to runtimes whose TEE evidence a policy \
accepts, and serves encrypted inference that clients verify themselves.\n\n\
Start with `cordon quickstart`: the whole flow on this machine with the simulated TEE (no hardware).",
    after_long_help = cmd_docs::TOP_AFTER_LONG_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole flow locally (simulated TEE): KBS, runtime, sealed model, verified encrypted inference.
    Quickstart(quickstart::Args),
    /// Create a model owner's Ed25519 signing key.
    Keygen(cmd_seal::KeygenArgs),
    /// Encrypt a file (model, dataset) into a sealed artifact under a fresh DEK.
    Seal(cmd_seal::SealArgs),
    /// Decrypt a sealed artifact with its key file (the owner's own check).
    Unseal(cmd_seal::UnsealArgs),
    /// Show a sealed artifact's manifest after checking its signature (decrypts nothing).
    Inspect(cmd_seal::InspectArgs),
    /// Key broker: serve, register keys, read the audit log.
    #[command(subcommand)]
    Kbs(cmd_kbs::KbsCommand),
    /// The runtime that runs inside the TEE: serve, or compute its measurement.
    #[command(subcommand)]
    Runtime(cmd_runtime::RuntimeCommand),
    /// The simulated TEE's "hardware" key (development only).
    #[command(subcommand)]
    Sim(cmd_runtime::SimCommand),
    /// Verify or inspect attestation evidence: AMD SEV-SNP reports, Intel DCAP quotes, sim evidence.
    #[command(subcommand)]
    Attest(cmd_attest::AttestCommand),
    /// Emulated SEV-SNP and TDX platforms for tests and CI (EMULATED, NOT hardware-backed).
    #[command(subcommand)]
    Emulator(emulator::EmulatorCommand),
    /// Write a release policy and a client policy from reference values (measurements, the
    /// runtime configuration, TCB minimums, a machine allowlist).
    #[command(subcommand)]
    Policy(cmd_policy::PolicyCommand),
    /// Verify a runtime, then run one encrypted inference request on it.
    Infer(cmd_infer::InferArgs),
    /// Check a signed chat completion offline: the runtime's attestation, the policy, and the
    /// signature of its attested key over the request and the exact answer.
    VerifyResponse(cmd_verify_response::VerifyResponseArgs),
    /// Serve the plain Open Inference Protocol on loopback for unmodified clients, forwarding every
    /// request encrypted to a runtime this proxy verified (fails closed; re-verifies).
    Proxy(cmd_proxy::ProxyArgs),
    /// Development: run the demo deployment (KBS and runtime, simulated TEE) in the foreground.
    #[command(subcommand)]
    Dev(cmd_dev::DevCommand),
    /// Run a model in process (no TEE, no server), as the runtime loads it: check a model before
    /// sealing it.
    #[command(subcommand)]
    Model(cmd_model::ModelCommand),
    /// Demonstrations on this machine (simulated TEE).
    #[command(subcommand)]
    Demo(cmd_demo::DemoCommand),
    /// A party of collaborative training: its key (identity and output key).
    #[command(subcommand)]
    Party(cmd_job::PartyCommand),
    /// A party's datasets: seal, register the key with the KBS, upload to the training runtime.
    #[command(subcommand)]
    Dataset(cmd_job::DatasetCommand),
    /// Collaborative training jobs: create, approve, submit, status, result, receipt verify.
    #[command(subcommand)]
    Job(cmd_job::JobCommand),
    /// Reference values computed from images and configurations: the launch measurement a TEE
    /// will report (`measure snp`: AMD SEV-SNP with QEMU and OVMF; `measure tdx`: MRTD from a
    /// TDVF image, RTMRs from an event log) and the workload data of a runtime configuration
    /// (`measure runtime`), for a policy to pin.
    #[command(subcommand)]
    Measure(cmd_measure::MeasureCommand),
    /// Benchmarks, each against a baseline measured in the same run (build with --release).
    #[command(subcommand)]
    Bench(cmd_bench::BenchCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(cmd_docs::CompletionsArgs),
    /// Write man pages generated from this command line's definition: cordon.1 and one per
    /// command (cordon-seal.1, cordon-kbs-serve.1, ...).
    Man(cmd_docs::ManArgs),
}

/// The command line: the derived definition with every command's examples and exit statuses.
fn command() -> clap::Command {
    cmd_docs::with_examples(Cli::command())
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    util::init_logging();
    if let Command::Attest(c) = cli.command {
        return ExitCode::from(cmd_attest::run(c));
    }
    let result = match cli.command {
        Command::Attest(_) => Ok(()),
        Command::Quickstart(a) => quickstart::run(a),
        Command::Keygen(a) => cmd_seal::keygen(a),
        Command::Seal(a) => cmd_seal::seal(a),
        Command::Unseal(a) => cmd_seal::unseal(a),
        Command::Inspect(a) => cmd_seal::inspect(a),
        Command::Kbs(c) => cmd_kbs::run(c),
        Command::Runtime(c) => cmd_runtime::run(c),
        Command::Sim(c) => cmd_runtime::run_sim(c),
        Command::Policy(c) => cmd_policy::run(c),
        Command::Emulator(c) => emulator::run(c),
        Command::Infer(a) => cmd_infer::run(a),
        Command::VerifyResponse(a) => cmd_verify_response::run(a),
        Command::Proxy(a) => cmd_proxy::run(a),
        Command::Dev(c) => cmd_dev::run(c),
        Command::Model(c) => cmd_model::run(c),
        Command::Demo(c) => cmd_demo::run(c),
        Command::Party(c) => cmd_job::run_party(c),
        Command::Dataset(c) => cmd_job::run_dataset(c),
        Command::Job(c) => cmd_job::run_job(c),
        Command::Measure(c) => cmd_measure::run(c),
        Command::Bench(c) => cmd_bench::run(c),
        Command::Completions(a) => cmd_docs::completions(a, command()),
        Command::Man(a) => cmd_docs::man(a, command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
