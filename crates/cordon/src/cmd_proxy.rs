//! `cordon proxy`: the local verifying proxy (logic in `cordon_client::proxy`).

use crate::cmd_kbs::shutdown_signal;
use crate::util;
use anyhow::{Context, Result};
use cordon_attest::Platform;
use cordon_client::proxy::{Proxy, ProxyConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// The runtime's base URL (what `cordon dev up` prints as the runtime URL; http:// or https://).
    #[arg(long, value_parser = crate::util::base_url)]
    upstream: String,
    #[command(flatten)]
    ca: util::CaCertArg,
    /// Client policy (TOML): what the runtime must prove; for `sim`, an [endorsements] section with its trust anchors.
    #[arg(long)]
    policy: PathBuf,
    /// Where to serve the plain Open Inference Protocol. Keep it on loopback: requests and answers
    /// are plaintext between the application and the proxy.
    #[arg(long, default_value = "127.0.0.1:8300")]
    listen: SocketAddr,
    /// Verify the runtime again after this many seconds (and whenever its key changes).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    reverify_secs: u64,
    /// Write the bound address (host:port) to this file once listening (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Also serve the KServe v2 gRPC service (`inference.GRPCInferenceService`) here, plaintext
    /// (h2c) like --listen: keep it on loopback. The same verified, encrypted channel carries it.
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// With --grpc-listen: write its bound address here once listening.
    #[arg(long, requires = "grpc_listen")]
    grpc_addr_file: Option<PathBuf>,
    /// HTTPS towards the application (the proxy's own side), for an application that is not on
    /// the same machine or pod; the leg to the runtime is encrypted either way.
    #[command(flatten)]
    tls: util::ServerTlsArgs,
}

pub fn run(a: ProxyArgs) -> Result<()> {
    let doc = util::load_policy_doc(&a.policy, "client policy")?;
    let config = ProxyConfig {
        reverify_every: Duration::from_secs(a.reverify_secs),
        tls: a.ca.tls()?,
        ..ProxyConfig::new(a.upstream.clone(), doc)
    };
    let tls = a.tls.load()?;
    let proxy = Proxy::new(config)?;
    if !a.listen.ip().is_loopback() {
        eprintln!(
            "WARNING: listening on {}, not loopback: anyone who reaches it sends requests {}to the proxy and reads the answers",
            a.listen,
            if tls.is_some() { "(over TLS, unauthenticated) " } else { "in plaintext " }
        );
    }
    util::tokio_runtime()?.block_on(async move {
        // The port first: a proxy that cannot listen stops before it contacts the runtime.
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let grpc_listener = match a.grpc_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} (--grpc-listen)"))?,
            ),
            None => None,
        };
        println!("verifying the runtime at {} with {}", a.upstream, a.policy.display());
        match proxy.verify_now().await {
            Ok(rt) => {
                let c = rt.claims();
                println!(
                    "verified runtime: platform {}, launch measurement {}, debug {}",
                    c.platform,
                    hex::encode(&c.launch_measurement),
                    c.debug
                );
                if c.platform == Platform::Sim {
                    println!("WARNING: the platform is SIMULATED: its evidence is signed by a local key, NOT hardware-backed; it proves nothing about isolation");
                }
                println!(
                    "pinned HPKE key {} (every request is encrypted to it)",
                    hex::encode(rt.keys().hpke_public_key)
                );
            }
            Err(e) => {
                // Keep serving: every request is refused with this reason until a later
                // verification succeeds (the runtime may simply not be up yet).
                eprintln!("NOT VERIFIED: {e}");
                eprintln!("every request gets 503 with this reason until the runtime verifies; nothing is forwarded");
            }
        }
        let addr = listener.local_addr()?;
        let scheme = a.tls.scheme();
        a.tls.announce("proxy");
        println!("serving the Open Inference Protocol at {scheme}://{addr}/v2 ({} on this side, encrypted to the runtime)", if tls.is_some() { "TLS" } else { "plaintext" });
        println!("status: {scheme}://{addr}/cordon/v1/status; re-verifying every {} s and whenever the runtime's key changes", a.reverify_secs);
        // Last, as the KBS and the runtime do: whoever waits for this file finds the lines above
        // already written.
        if let Some(grpc_listener) = grpc_listener {
            let grpc_addr = grpc_listener.local_addr()?;
            if !grpc_addr.ip().is_loopback() {
                eprintln!(
                    "WARNING: gRPC on {grpc_addr}, not loopback: anyone who reaches it sends requests to the proxy and reads the answers, in plaintext"
                );
            }
            println!("serving the Open Inference Protocol over gRPC (KServe v2 GRPCInferenceService) at {grpc_addr} (plaintext on this side, encrypted to the runtime)");
            let surface = cordon_client::grpc::GrpcSurface::new(proxy.clone());
            tokio::spawn(async move {
                if let Err(e) = surface.serve(grpc_listener, shutdown_signal()).await {
                    eprintln!("error: the gRPC surface stopped: {e}");
                }
            });
            if let Some(f) = &a.grpc_addr_file {
                util::write_atomic(f, grpc_addr.to_string().as_bytes())?;
            }
        }
        if let Some(f) = &a.addr_file {
            util::write_atomic(f, addr.to_string().as_bytes())?;
        }
        proxy.serve_with_tls(listener, tls, shutdown_signal()).await?;
        Ok(())
    })
}
