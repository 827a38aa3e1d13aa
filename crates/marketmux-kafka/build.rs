//! Compiles `proto/stock.proto` with prost, using the vendored `protoc`
//! (none needs to be installed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.compile_protos(&["proto/stock.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/stock.proto");
    Ok(())
}
