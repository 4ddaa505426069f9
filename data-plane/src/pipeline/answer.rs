//! Writes a filter's `Answer` (or the pipeline's own 404 and 503) to the
//! client as a small complete response.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::pipeline::chain::Answer;

/// Writes the answer and ends the request; `Ok(true)` as Pingora's
/// `request_filter` wants it.
pub async fn write(session: &mut Session, answer: Answer) -> Result<bool> {
    if answer.close {
        session.set_keepalive(None);
    }
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
    if session.is_upgrade_req() {
        header.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    if answer.body.is_empty() {
        session
            .write_response_header(Box::new(header), true)
            .await?;
        return Ok(true);
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    let body = match answer.body {
        std::borrow::Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        std::borrow::Cow::Owned(s) => Bytes::from(s),
    };
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}
