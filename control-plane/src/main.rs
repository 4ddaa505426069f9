//! portico-cp: the control plane. Services register over the line protocol;
//! data planes dial the gRPC port and receive every committed version.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use portico_cp::cli::cp::{Args, StoreKind, Tool};
use portico_cp::server;
use portico_cp::store::{self, state_file};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit code when the state store cannot be written (EX_SOFTWARE).
const EXIT_STORE_FAILED: i32 = 70;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let store: Arc<dyn store::Store> = match args.store {
        StoreKind::Embedded => {
            if args.reset_state {
                let file = args.data_dir.join(store::RedbStore::FILE);
                if file.exists() {
                    std::fs::remove_file(&file)
                        .with_context(|| format!("removing {}", file.display()))?;
                    tracing::warn!(file = %file.display(), "stored state discarded (--reset-state)");
                }
            }
            Arc::new(store::RedbStore::open(
                &args.data_dir,
                !args.unsafe_no_fsync,
            )?)
        }
        StoreKind::Etcd => {
            anyhow::ensure!(
                !args.reset_state,
                "--reset-state works on the embedded store only; delete the etcd prefix {} instead",
                args.etcd_prefix
            );
            let tls = store::EtcdTls {
                ca: args.etcd_tls_ca.clone(),
                cert: args.etcd_tls_cert.clone(),
                key: args.etcd_tls_key.clone(),
            };
            Arc::new(store::EtcdStore::connect(
                &args.etcd_endpoints,
                &args.etcd_prefix,
                &args.replica(),
                &tls,
            )?)
        }
    };
    match args.command {
        Some(Tool::Export) => state_file::export(store.as_ref(), std::io::stdout().lock()),
        Some(Tool::Import) => state_file::import(store.as_ref(), std::io::stdin().lock()),
        None => {
            match actix_rt::System::new().block_on(server::run(args.config()?, store)) {
                // Fail-stop: data planes keep serving while it is restarted.
                Err(e) if e.is::<store::StoreError>() => {
                    tracing::error!(error = %e, "stopping: the state store cannot be written");
                    std::process::exit(EXIT_STORE_FAILED)
                }
                other => other,
            }
        }
    }
}
