//! The filter chain: the gates a request passes before its backend, each
//! behind the one small `Filter` interface. A route's chain is built once,
//! with the table, and holds only the filters its settings use.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use pingora::http::RequestHeader;

use crate::backends::runtime::Endpoint;

/// What a filter sees of the request.
pub struct Request<'a> {
    pub head: &'a RequestHeader,
    /// The head as received, read only when a check needs its bytes (a
    /// request with `Transfer-Encoding`).
    pub raw_head: Option<&'a [u8]>,
    pub client: Option<IpAddr>,
    /// It came over TLS.
    pub tls: bool,
    /// The port this data plane serves HTTPS on, if it does.
    pub https_port: Option<u16>,
    /// It asks to upgrade the connection (WebSocket).
    pub upgrade: bool,
    pub now: SystemTime,
}

impl<'a> Request<'a> {
    /// The host, lower case and without its port (empty when missing); read
    /// from the head only by the filters that need it.
    pub fn host(&self) -> Cow<'a, str> {
        request_host(self.head).unwrap_or_default()
    }
}

/// The request's host, lower case and without a port; borrowed unless it
/// had upper-case letters.
pub fn request_host(req: &RequestHeader) -> Option<Cow<'_, str>> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())?;
    let host = if let Some(v6) = raw.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// Where the request goes once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The route's own backend; `breaker` says a breaker slot was taken.
    Backend { breaker: bool },
    /// The route's maintenance backend.
    Maintenance,
}

/// What the filters decided about the request's backend.
#[derive(Default)]
pub struct Admission {
    pub target: Option<Target>,
    /// The address of the route's backend the request goes to.
    pub endpoint: Option<Arc<Endpoint>>,
    /// Attempts left on another backend after a failed connect.
    pub retries_left: u8,
    /// The client's country, when a geo filter looked it up.
    pub country: Option<crate::config::geoip::Country>,
}

/// A complete response written instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Cow<'static, str>,
    pub retry_after: Option<u64>,
    pub location: Option<String>,
    /// Close the client connection after it.
    pub close: bool,
}

impl Answer {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<Cow<'static, str>>) -> Answer {
        Answer {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: body.into(),
            retry_after: None,
            location: None,
            close: false,
        }
    }

    /// `308 Permanent Redirect` (the method and body are kept).
    pub fn redirect(location: String) -> Answer {
        Answer {
            status: 308,
            content_type: None,
            body: Cow::Borrowed(""),
            retry_after: None,
            location: Some(location),
            close: false,
        }
    }

    pub fn content_type(mut self, content_type: &'static str) -> Answer {
        self.content_type = Some(content_type);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Answer {
        self.retry_after = Some(secs);
        self
    }

    pub fn close(mut self) -> Answer {
        self.close = true;
        self
    }
}

/// What a filter says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Next,
    Answer(Answer),
}

/// One gate on the request path.
pub trait Filter: Send + Sync {
    /// Runs before the backend; `Flow::Answer` ends the request there.
    fn on_request(&self, req: &Request<'_>, admission: &mut Admission) -> Flow;

    /// Runs once the request ended: `Some(ok)` for what the backend did,
    /// `None` when it ended for another reason (the client went away).
    fn on_done(&self, _admission: &Admission, _outcome: Option<bool>) {}
}

/// Filters in the order they run.
#[derive(Default)]
pub struct Chain(Box<[Box<dyn Filter>]>);

impl Chain {
    pub fn new(filters: Vec<Box<dyn Filter>>) -> Chain {
        Chain(filters.into_boxed_slice())
    }

    /// Runs the filters until one answers.
    pub fn run(&self, req: &Request<'_>, admission: &mut Admission) -> Flow {
        for filter in self.0.iter() {
            if let Flow::Answer(answer) = filter.on_request(req, admission) {
                return Flow::Answer(answer);
            }
        }
        Flow::Next
    }

    pub fn done(&self, admission: &Admission, outcome: Option<bool>) {
        for filter in self.0.iter() {
            filter.on_done(admission, outcome);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
