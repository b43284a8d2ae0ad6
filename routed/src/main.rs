//! `fjord-routed`: the per-node route daemon (`run`) and its status client (`status`).

use clap::Parser;
use fjord_routed::config::{Cli, CliCommand, InstallCniArgs, StatusArgs};
use fjord_routed::{daemon, install, status};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the daemon's work is a socket per peer and a netlink socket; a single
    // thread keeps its memory small (issue 3 measures it against BIRD).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match cli.command {
        CliCommand::Run(args) => {
            init_logging();
            let settings = match args.settings() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            let node = settings.node_name.clone();
            match runtime.block_on(daemon::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(%node, error = %e, "fjord-routed stopped");
                    ExitCode::FAILURE
                }
            }
        }
        CliCommand::Status(args) => runtime.block_on(print_status(&args)),
        CliCommand::InstallCni(args) => install_cni(&args),
    }
}

/// The init container's work: one line per file, a warning per shadowing config.
fn install_cni(args: &InstallCniArgs) -> ExitCode {
    let template = match std::fs::read_to_string(&args.conflist_template) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "fjord-routed install-cni: cannot read the conflist template {}: {e}",
                args.conflist_template.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let plan = install::InstallPlan {
        source_bin_dir: args.source_bin_dir.clone(),
        cni_bin_dir: args.cni_bin_dir.clone(),
        cni_conf_dir: args.cni_conf_dir.clone(),
        conflist_name: args.conflist_name.clone(),
        template,
        node_name: args.node_name.clone(),
        store: args.store.clone(),
    };
    match install::install(&plan) {
        Ok(report) => {
            for file in &report.files {
                let what = if file.changed {
                    "installed"
                } else {
                    "unchanged"
                };
                println!("{what} {} ({} bytes)", file.path.display(), file.bytes);
            }
            for other in &report.shadowing_configs {
                eprintln!(
                    "warning: {} sorts before {} in {}: the runtime uses the first network config, so Fjord is not used until it is removed",
                    other,
                    args.conflist_name,
                    args.cni_conf_dir.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fjord-routed {e}");
            ExitCode::FAILURE
        }
    }
}

async fn print_status(args: &StatusArgs) -> ExitCode {
    match status::query(&args.socket).await {
        Ok(report) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("a report serializes")
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", status::render_table(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fjord-routed status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Structured logs on stderr (DaemonSets collect them); `RUST_LOG` filters, info by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
