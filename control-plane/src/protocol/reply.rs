//! One response line: a code, the echoed transaction id, an optional payload.

/// Every reply code of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    Ack,
    BackendFail,
    BackendOk,
    CircuitOk,
    CircuitStatusOk,
    DiffOk,
    DrainOk,
    DrainStatusOk,
    Error,
    HeadersOk,
    HealthOk,
    MaintOk,
    MaintStatusOk,
    Ok,
    OptionsOk,
    Pong,
    RatelimitOk,
    Reregister,
    RouteBulkOk,
    RouteListOk,
    RouteOk,
    SessionOk,
    ShutdownOk,
    StatsOk,
    SubscribeOk,
    UnsubscribeOk,
}

impl ReplyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyCode::Ack => "ACK",
            ReplyCode::BackendFail => "BACKEND_FAIL",
            ReplyCode::BackendOk => "BACKEND_OK",
            ReplyCode::CircuitOk => "CIRCUIT_OK",
            ReplyCode::CircuitStatusOk => "CIRCUIT_STATUS_OK",
            ReplyCode::DiffOk => "DIFF_OK",
            ReplyCode::DrainOk => "DRAIN_OK",
            ReplyCode::DrainStatusOk => "DRAIN_STATUS_OK",
            ReplyCode::Error => "ERROR",
            ReplyCode::HeadersOk => "HEADERS_OK",
            ReplyCode::HealthOk => "HEALTH_OK",
            ReplyCode::MaintOk => "MAINT_OK",
            ReplyCode::MaintStatusOk => "MAINT_STATUS_OK",
            ReplyCode::Ok => "OK",
            ReplyCode::OptionsOk => "OPTIONS_OK",
            ReplyCode::Pong => "PONG",
            ReplyCode::RatelimitOk => "RATELIMIT_OK",
            ReplyCode::Reregister => "REREGISTER",
            ReplyCode::RouteBulkOk => "ROUTE_BULK_OK",
            ReplyCode::RouteListOk => "ROUTE_LIST_OK",
            ReplyCode::RouteOk => "ROUTE_OK",
            ReplyCode::SessionOk => "SESSION_OK",
            ReplyCode::ShutdownOk => "SHUTDOWN_OK",
            ReplyCode::StatsOk => "STATS_OK",
            ReplyCode::SubscribeOk => "SUBSCRIBE_OK",
            ReplyCode::UnsubscribeOk => "UNSUBSCRIBE_OK",
        }
    }
}

/// A reply to one command. `close` asks the connection to close after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub payload: Option<String>,
    pub close: bool,
}

impl Reply {
    pub fn code(code: ReplyCode) -> Self {
        Reply {
            code,
            payload: None,
            close: false,
        }
    }

    pub fn with(code: ReplyCode, payload: impl Into<String>) -> Self {
        Reply {
            code,
            payload: Some(payload.into()),
            close: false,
        }
    }

    pub fn ok() -> Self {
        Reply::code(ReplyCode::Ok)
    }

    pub fn error(message: impl Into<String>) -> Self {
        Reply::with(ReplyCode::Error, message)
    }

    pub fn invalid_session() -> Self {
        Reply::error("invalid session")
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// `CODE|txn:…|payload\n`, with the transaction id right after the code.
    pub fn render(&self, txn: Option<&str>) -> String {
        let mut line = String::with_capacity(
            self.code.as_str().len()
                + txn.map_or(0, |t| t.len() + 1)
                + self.payload.as_ref().map_or(0, |p| p.len() + 1)
                + 1,
        );
        line.push_str(self.code.as_str());
        if let Some(txn) = txn {
            line.push('|');
            line.push_str(txn);
        }
        if let Some(payload) = &self.payload {
            line.push('|');
            // A reply is one line whatever it quotes: an error may echo a
            // client's text with newlines in it (a JSON key's `\n` escape,
            // found by fuzzing), which would forge a second reply.
            if payload.contains(['\n', '\r']) {
                line.push_str(&payload.replace('\n', "\\n").replace('\r', "\\r"));
            } else {
                line.push_str(payload);
            }
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_one_line_whatever_it_quotes() {
        let reply = Reply::error("invalid field `a\nOK\r`");
        assert_eq!(reply.render(None), "ERROR|invalid field `a\\nOK\\r`\n");
    }

    #[test]
    fn renders_txn_after_the_code() {
        assert_eq!(
            Reply::with(ReplyCode::RouteOk, "r1").render(Some("txn:42")),
            "ROUTE_OK|txn:42|r1\n"
        );
        assert_eq!(Reply::ok().render(Some("txn:42")), "OK|txn:42\n");
        assert_eq!(Reply::error("bad").render(None), "ERROR|bad\n");
    }
}
