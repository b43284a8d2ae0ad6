//! `fjord`: the CNI plugin. Gives a pod a routed veth interface (ARCHITECTURE.md, "The pod
//! datapath") with addresses from fjord-ipam or any delegated IPAM plugin.

mod config;
mod datapath;
mod error;
mod ipam;
mod log;
mod names;
mod netlink;
mod netns;
mod plugin;
mod reaper;
mod sysctl;

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = fjord_cni_types::skel::run(
        &plugin::Fjord,
        |k| std::env::var(k).ok(),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    );
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
