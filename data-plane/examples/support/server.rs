//! The server the bare references run on: the same settings as portico-dp's
//! (one worker, one event loop per thread), so each differs from Portico
//! only by what Portico does per request.

use pingora::server::configuration::ServerConf;
use pingora::server::Server;

pub fn one_worker() -> Server {
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}
