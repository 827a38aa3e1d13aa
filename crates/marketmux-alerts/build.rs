//! Generates the gRPC alert API from `proto/alert.proto` with a vendored
//! `protoc`, so a clean clone builds without a system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-changed=proto/alert.proto");
    tonic_prost_build::configure().compile_protos(&["proto/alert.proto"], &["proto"])?;
    Ok(())
}
