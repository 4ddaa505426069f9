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

    /// REGISTER with a maintenance port and return the session id.
    pub fn register_with_port(&mut self, service: &str, instance: &str, port: u16) -> String {
        let reply = self.send(&format!("REGISTER|{service}|{instance}|{port}|{{}}"));
        reply
            .strip_prefix("ACK|")
            .unwrap_or_else(|| panic!("REGISTER answered {reply}"))
            .to_string()
    }

    /// Half-closes: no more commands, replies still arrive.
    pub fn shutdown_write(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }

    /// Whether the server closed the connection (EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0))
    }
}

/// A registered session on its own persistent (home) connection.
pub struct Session {
    pub client: LineClient,
    pub id: String,
}

impl Session {
    pub fn register(addr: SocketAddr, service: &str, instance: &str) -> Session {
        let mut client = LineClient::connect(addr);
        let id = client.register(service, instance);
        Session { client, id }
    }

    /// `NAME|<session>|rest` (or `NAME|<session>` when `rest` is empty).
    pub fn cmd(&mut self, name: &str, rest: &str) -> String {
        let line = if rest.is_empty() {
            format!("{name}|{}", self.id)
        } else {
            format!("{name}|{}|{rest}", self.id)
        };
        self.client.send(&line)
    }

    /// Stages a route and returns its id.
    pub fn add_route(&mut self, host: &str, path: &str, backend: &str) -> String {
        let reply = self.cmd("ROUTE_ADD", &format!("{host}|{path}|{backend}|0"));
        reply
            .strip_prefix("ROUTE_OK|")
            .unwrap_or_else(|| panic!("ROUTE_ADD answered {reply}"))
            .to_string()
    }

    pub fn apply(&mut self) {
        assert_eq!(self.cmd("CONFIG_APPLY", ""), "OK");
    }

    /// Sends `NAME|<session>|rest` and parses the JSON after `CODE|`.
    pub fn json(&mut self, name: &str, rest: &str, code: &str) -> serde_json::Value {
        let reply = self.cmd(name, rest);
        json_after(&reply, code)
    }
}

/// The JSON payload of a `CODE|{json}` line.
pub fn json_after(reply: &str, code: &str) -> serde_json::Value {
    let payload = reply
        .strip_prefix(code)
        .and_then(|r| r.strip_prefix('|'))
        .unwrap_or_else(|| panic!("expected {code}|…, got {reply}"));
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("bad JSON in {reply}: {e}"))
}

/// The JSON of a `compressed` payload: gzip, then standard padded base64.
pub fn gunzip_base64(payload: &str) -> serde_json::Value {
    use base64::Engine;
    use std::io::Read;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .expect("base64");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("gzip");
    serde_json::from_str(&text).expect("json")
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
    /// The body bytes as received (for compressed responses).
    pub raw_body: Vec<u8>,
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
    http_request(addr, host, path, &[])
}

/// `GET path` with extra request headers.
pub fn http_request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// `POST path` with a JSON body.
pub fn http_post(addr: SocketAddr, path: &str, json: &str) -> std::io::Result<HttpResponse> {
    exchange(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        ),
    )
}

/// `GET path` with extra headers, from the local address `source` (a
/// loopback address such as 127.0.0.2, so filters see another client).
pub fn http_request_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    exchange_on(socket.into(), request)
}

/// Sends one request and reads the whole response.
fn exchange(addr: SocketAddr, request: String) -> std::io::Result<HttpResponse> {
    exchange_on(TcpStream::connect_timeout(&addr, IO_TIMEOUT)?, request)
}

fn exchange_on(mut stream: TcpStream, request: String) -> std::io::Result<HttpResponse> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    if raw.is_empty() {
        // Closed before any byte of an answer (a server stopping).
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before any answer",
        ));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "malformed response {:?}",
                String::from_utf8_lossy(&raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut raw_body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        raw_body = dechunk(&raw_body)?;
    }
    let body = String::from_utf8_lossy(&raw_body).to_string();
    let text = &head;
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
        body,
        raw_body,
    })
}

/// Decodes a chunked body: `<hex size>\r\n<data>\r\n` until size 0.
fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::other("malformed chunked body");
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
