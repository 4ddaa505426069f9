//! One response line: a code, the echoed transaction id, an optional payload.

/// A reply to one command. `close` asks the connection to close after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: &'static str,
    pub payload: Option<String>,
    pub close: bool,
}

impl Reply {
    pub fn code(code: &'static str) -> Self {
        Reply {
            code,
            payload: None,
            close: false,
        }
    }

    pub fn with(code: &'static str, payload: impl Into<String>) -> Self {
        Reply {
            code,
            payload: Some(payload.into()),
            close: false,
        }
    }

    pub fn ok() -> Self {
        Reply::code("OK")
    }

    pub fn error(message: impl Into<String>) -> Self {
        Reply::with("ERROR", message)
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
            self.code.len()
                + txn.map_or(0, |t| t.len() + 1)
                + self.payload.as_ref().map_or(0, |p| p.len() + 1)
                + 1,
        );
        line.push_str(self.code);
        if let Some(txn) = txn {
            line.push('|');
            line.push_str(txn);
        }
        if let Some(payload) = &self.payload {
            line.push('|');
            line.push_str(payload);
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_txn_after_the_code() {
        assert_eq!(
            Reply::with("ROUTE_OK", "r1").render(Some("txn:42")),
            "ROUTE_OK|txn:42|r1\n"
        );
        assert_eq!(Reply::ok().render(Some("txn:42")), "OK|txn:42\n");
        assert_eq!(Reply::error("bad").render(None), "ERROR|bad\n");
    }
}
