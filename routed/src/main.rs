//! `fjord-routed`: the per-node route daemon (`run`) and its status client (`status`).

use clap::Parser;
use fjord_routed::config::{Cli, CliCommand, InstallCniArgs, StatusArgs};
use fjord_routed::{daemon, install, status};
use std::process::ExitCode;

fn main() -> ExitCode {
    one_malloc_arena();
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
        exclusive: args.exclusive,
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
            for moved in &report.moved_aside {
                let why = match moved.reason {
                    install::MoveReason::Exclusive => {
                        "exclusive mode: the runtime must use Fjord's config; \
                         FJORD_CNI_EXCLUSIVE=false leaves other configs in place"
                    }
                    install::MoveReason::OldFjordConflist => {
                        "a Fjord conflist of an earlier release under another name"
                    }
                };
                println!(
                    "moved aside {dir}/{} to {dir}/{} ({why}; rename it back to undo)",
                    moved.from,
                    moved.to,
                    dir = args.cni_conf_dir.display()
                );
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

/// The daemon has two threads (the runtime and the kernel batch thread, see
/// `kernel::Kernel::apply`) and little contention between them: one glibc heap is
/// enough, and a second arena's pages would only add to the resident set that issue 3
/// measures against BIRD.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Structured logs on stderr (DaemonSets collect them); `RUST_LOG` filters by level and
/// target (`debug`, `fjord_routed=debug,info`), info by default. A target filter rather
/// than `EnvFilter`: it needs no regex engine, which keeps the daemon's resident size
/// down (issue 3 measures it against BIRD).
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .finish()
        .with(filter);
    tracing::subscriber::set_global_default(subscriber).expect("logging is set up once");
}
