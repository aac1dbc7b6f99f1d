//! `margay-bgpd`: the BGP-4 speaker daemon.
fn main() -> anyhow::Result<()> {
    Ok(())
}
