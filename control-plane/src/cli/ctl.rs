//! `porticoctl`'s flags and subcommands.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "porticoctl",
    version,
    about = "Operate a Portico control plane"
)]
pub struct Args {
    /// gRPC address of the control plane.
    #[arg(
        long,
        env = "PORTICO_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8182",
        global = true,
        help_heading = "Connection"
    )]
    pub control_plane: String,
    #[command(flatten)]
    pub tls: portico_proto::tls::TlsFiles,
    /// Print JSON instead of tables.
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Follow every push and each data plane's ACK or NACK.
    Watch,
    /// The data planes of the fleet (connected, stopping, disconnected within
    /// the fleet grace, recently gone or stopped) and the versions they
    /// acknowledged.
    Dataplanes,
    /// The live control-plane replicas sharing the etcd prefix (docs/HA.md).
    Replicas,
    /// The routes of the current configuration.
    Routes,
    /// The whole current configuration.
    Snapshot,
    /// The certificates served (domains, source, expiry, serial, the data
    /// planes serving each) and the ACME domains still waiting.
    Certs,
    /// The site files of --sites and --global: name, file, enabled, routes,
    /// the version that applied them, the last error and the warnings.
    Sites,
}
