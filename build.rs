//! Compiles the admin API in proto/ with protox (pure Rust, no protoc).
//! Envoy's types come from envoy-types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/countersign/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("admin_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
