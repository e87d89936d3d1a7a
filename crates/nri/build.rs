//! Generates the NRI messages and the ttrpc `Runtime` / `Plugin` services from
//! the verbatim `proto/nri/api.proto` (ttrpc-codegen parses it in pure Rust:
//! no protoc needed).

fn main() -> std::io::Result<()> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/nri");
    let api = format!("{proto_dir}/api.proto");
    println!("cargo:rerun-if-changed={api}");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .include(proto_dir)
        .input(&api)
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;
    // The generated files open with inner attributes (`#![allow(...)]`), which
    // `include!` cannot take: drop them (lib.rs sets the allows on the modules).
    for file in ["api.rs", "api_ttrpc.rs"] {
        let path = std::path::Path::new(&out).join(file);
        let text = std::fs::read_to_string(&path)?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n"))?;
    }
    Ok(())
}
