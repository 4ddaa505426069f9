//! A mock DNS server on loopback: Debian's `pebble-challtestsrv`, whose A
//! records a test adds and removes through its management API. Unknown
//! names get an empty answer, as a real server gives a name with no address.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use crate::process::Proc;
use crate::{http_post, wait_for};

pub struct MockDns {
    pub proc: Proc,
    /// Where it answers queries (UDP and TCP).
    pub addr: SocketAddr,
    management: SocketAddr,
}

/// A loopback port free for both UDP and TCP now.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP port");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl MockDns {
    /// Unknown names get no address.
    pub fn start() -> MockDns {
        Self::start_answering("")
    }

    /// Unknown names get `default_ipv4` (none when empty), and no IPv6 address.
    pub fn start_answering(default_ipv4: &str) -> MockDns {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args: Vec<String> = [
            "-dns01",
            &addr.to_string(),
            "-management",
            &management.to_string(),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv4",
            default_ipv4,
            "-defaultIPv6",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::spawn_program(
            Path::new("pebble-challtestsrv"),
            "pebble-challtestsrv",
            &args,
            &[],
        );
        wait_for("the mock DNS server", Duration::from_secs(10), || {
            TcpStream::connect(management).ok()?;
            TcpStream::connect(addr).ok()
        });
        MockDns {
            proc,
            addr,
            management,
        }
    }

    /// `name` answers these IPv4 addresses (replacing what it had).
    pub fn set_a(&self, name: &str, addresses: &[&str]) {
        self.clear_a(name);
        let body = serde_json::json!({ "host": format!("{name}."), "addresses": addresses });
        self.call("/add-a", &body.to_string());
    }

    /// `name` answers no address.
    pub fn clear_a(&self, name: &str) {
        let body = serde_json::json!({ "host": format!("{name}.") });
        self.call("/clear-a", &body.to_string());
    }

    fn call(&self, path: &str, body: &str) {
        let r = http_post(self.management, path, body).expect("mock DNS management API");
        assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }
}
