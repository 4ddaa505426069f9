//! The data planes and the other replicas: the fleet and what each member
//! acknowledged, the publisher that streams versions to them, the gRPC
//! services, and the commands sent through to the data planes.

pub mod fleet;
pub mod grpc;
pub mod peers;
pub mod plane_commands;
pub mod publisher;
