//! Generates the tonic/prost code for margay's `.proto` contracts (needs Debian's protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["margay/bgp/v1/bgp.proto", "margay/felix/v1/felix.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["."])?;
    Ok(())
}
