//! The request path: Pingora's phase callbacks (`proxy`), which run the
//! filter chains (`chain`), choose a backend and forward (`upstream`).

pub mod answer;
pub mod chain;
pub mod ctx;
pub mod proxy;
pub mod upstream;
