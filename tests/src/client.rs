//! Blocking clients: the registry line protocol (persistent or one
//! connection per command, as `nc` users do) and one-shot HTTP/1.1 GETs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> LineClient {
        let stream =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connecting to the registry");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        LineClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("writing to the registry");
    }

    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reading a reply");
        assert!(
            line.ends_with('\n'),
            "connection closed; partial line {line:?}"
        );
        line.trim_end_matches('\n').to_string()
    }

    /// Sends one command and returns its reply line.
    pub fn send(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\n").as_bytes());
        self.read_line()
    }

    /// REGISTER and return the session id.
    pub fn register(&mut self, service: &str, instance: &str) -> String {
        let reply = self.send(&format!("REGISTER|{service}|{instance}|0|{{}}"));
        reply
            .strip_prefix("ACK|")
            .unwrap_or_else(|| panic!("REGISTER answered {reply}"))
            .to_string()
    }

    /// Whether the server closed the connection (EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

/// One connection, one command, read the reply, close: the `nc` style.
pub fn one_shot(addr: SocketAddr, line: &str) -> String {
    let mut client = LineClient::connect(addr);
    client.send_raw(format!("{line}\n").as_bytes());
    client.writer.shutdown(std::net::Shutdown::Write).ok();
    client.read_line()
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with the given Host, `Connection: close`, whole response read.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("malformed response {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}
