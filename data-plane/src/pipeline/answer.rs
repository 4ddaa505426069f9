//! Writes a filter's `Answer` (or the pipeline's own 404 and 503) to the
//! client as a small complete response, on either request path.

use std::borrow::Cow;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;

use crate::pipeline::chain::Answer;

/// Writes the answer through Pingora's proxy session and ends the request;
/// `Ok(true)` as Pingora's `request_filter` wants it.
pub async fn write(session: &mut Session, answer: Answer) -> Result<bool> {
    let upgrade = session.is_upgrade_req();
    let (header, body, close) = response(answer, upgrade)?;
    if close {
        session.set_keepalive(None);
    }
    if body.is_empty() {
        session.write_response_header(header, true).await?;
    } else {
        session.write_response_header(header, false).await?;
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// Writes the answer straight to the client's session (the fast path).
pub async fn write_to(session: &mut ServerSession, answer: Answer) -> Result<()> {
    let (header, body, close) = response(answer, session.is_upgrade_req())?;
    if close {
        session.set_keepalive(None);
    }
    session.write_response_header(header).await?;
    session.write_response_body(body, true).await
}

/// The answer's head and body, and whether the connection closes after it.
fn response(answer: Answer, upgrade: bool) -> Result<(Box<ResponseHeader>, Bytes, bool)> {
    let mut header = ResponseHeader::build(answer.status, Some(4))?;
    if let Some(location) = answer.location {
        header.insert_header("location", location)?;
    }
    if let Some(content_type) = answer.content_type {
        header.insert_header("content-type", content_type)?;
    }
    header.insert_header("content-length", answer.body.len().to_string())?;
    if let Some(secs) = answer.retry_after {
        header.insert_header("retry-after", secs.to_string())?;
    }
    // A refused upgrade must not leave the client waiting on a half-upgraded
    // connection.
    if upgrade {
        header.insert_header("connection", "close")?;
    }
    let body = match answer.body {
        Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s),
    };
    Ok((Box::new(header), body, answer.close || upgrade))
}
