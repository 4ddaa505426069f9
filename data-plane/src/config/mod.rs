//! Configuration: the link to the control plane, each push checked and
//! installed whole, the compiled route table the pipeline reads, and the
//! snapshot cache on disk.

pub mod cache;
pub mod geoip;
pub mod install;
pub mod live;
pub mod outbound;
pub mod policy;
pub mod sync;
pub mod table;
