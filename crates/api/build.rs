//! Generates the CRI types and services from the verbatim `proto/api.proto`,
//! and Berth's own admin service from `proto/admin.proto`.
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let api = format!("{proto_dir}/api.proto");
    let admin = format!("{proto_dir}/admin.proto");
    println!("cargo:rerun-if-changed={api}");
    println!("cargo:rerun-if-changed={admin}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[api.as_str(), admin.as_str()], &[proto_dir])?;
    Ok(())
}
