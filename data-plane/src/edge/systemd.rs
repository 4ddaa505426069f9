//! Tells systemd (`Type=notify`, `NotifyAccess=all`) that this process is
//! ready and is the service's main one, so that after an upgrade the new
//! process, not the old, is the one systemd follows.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::warn;

/// Does nothing when not started by systemd (`NOTIFY_SOCKET` unset).
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = (|| {
        let addr = match path.as_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&path)?,
        };
        UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)
    })();
    if let Err(e) = sent {
        warn!(error = %e, "cannot notify systemd");
    }
}
