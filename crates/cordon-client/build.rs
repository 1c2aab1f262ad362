//! Compiles the vendored KServe v2 gRPC definition (proto/grpc_predict_v2.proto) into Rust: the
//! messages (prost) and the server side of `GRPCInferenceService` (tonic). `protox` parses the
//! .proto in pure Rust, so the build needs no `protoc` and downloads nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    let files = protox::compile(["proto/grpc_predict_v2.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(files)?;
    Ok(())
}
