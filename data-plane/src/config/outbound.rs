//! The sender of the current stream to the control plane, if connected:
//! ACK-independent messages (telemetry, health and breaker changes, backend
//! test results) go out through it, in the order they were built.

use std::sync::Arc;

use parking_lot::Mutex;
use portico_proto::v1::{self, data_plane_message};
use tokio::sync::mpsc;

#[derive(Clone, Default)]
pub struct Outbound(Arc<Mutex<Option<mpsc::Sender<v1::DataPlaneMessage>>>>);

impl Outbound {
    pub(crate) fn set(&self, tx: Option<mpsc::Sender<v1::DataPlaneMessage>>) {
        *self.0.lock() = tx;
    }

    /// The stream to the control plane is up.
    pub fn is_connected(&self) -> bool {
        self.0.lock().is_some()
    }

    /// Sends without waiting; dropped when not connected or the stream is full.
    pub fn send(&self, msg: data_plane_message::Msg) {
        self.send_with(|| Some(msg));
    }

    /// Builds the message while holding the stream, so that states read by
    /// `build` reach the control plane in the order they were read: a later
    /// breaker report never overtakes the newer state.
    pub fn send_with(&self, build: impl FnOnce() -> Option<data_plane_message::Msg>) {
        let guard = self.0.lock();
        if let Some(tx) = &*guard {
            if let Some(msg) = build() {
                let _ = tx.try_send(v1::DataPlaneMessage { msg: Some(msg) });
            }
        }
    }

    /// Tells the control plane this data plane stops, so applies stop
    /// waiting for it; sent when stopping starts and again on any stream
    /// opened after.
    pub fn send_stopping(&self, reason: &str) {
        self.send(data_plane_message::Msg::Stopping(v1::Stopping {
            reason: reason.to_string(),
        }));
    }
}
