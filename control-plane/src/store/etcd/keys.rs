//! The key layout under the prefix: a batch to the key writes that store
//! it, each watched or loaded key back to the record it holds, and single
//! values (a counter, what a transaction read back).

use std::sync::Arc;

use portico_proto::v1;

use crate::store::{Batch, Loaded, MemberRecord, SessionRecord};

/// The ACME account's key.
pub(super) const ACME_ACCOUNT: &str = "tls/acme/account";

pub(super) fn number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The value a failed transaction's `or_else` get read, if the key exists.
pub(in crate::store) fn read_back(response: etcd_client::TxnResponse) -> Option<Vec<u8>> {
    response.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(got) => got.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

/// One stored record, written (`Some` value) or deleted (`None`), in the
/// shape the embedded store keeps it.
pub(super) enum Record {
    Version(u64),
    RouteReserved(u64),
    Session(String, Option<Box<SessionRecord>>),
    Member(String, Option<MemberRecord>),
    Certificate(String, Option<Arc<v1::Certificate>>),
    Challenge(String, Option<String>),
    AcmeAccount(Vec<u8>),
    /// `replicas/<id>`: only its going matters to the others.
    Replica(String, bool),
}

impl Record {
    /// Reads the record at `rest` (the key under the prefix); `None` for a
    /// key this build does not know.
    pub(super) fn decode(rest: &str, value: Option<&[u8]>) -> Result<Option<Record>, String> {
        fn bad(what: String, e: &dyn std::fmt::Display) -> String {
            format!("{what}: {e}")
        }
        fn json<T: serde::de::DeserializeOwned>(
            value: Option<&[u8]>,
            what: String,
        ) -> Result<Option<T>, String> {
            value
                .map(|v| serde_json::from_slice(v).map_err(|e| bad(what, &e)))
                .transpose()
        }
        Ok(Some(if rest == "meta/version" {
            Record::Version(value.and_then(number).unwrap_or(0))
        } else if rest == "meta/route_reserved" {
            Record::RouteReserved(value.and_then(number).unwrap_or(0))
        } else if let Some(id) = rest.strip_prefix("sessions/") {
            Record::Session(id.to_string(), json(value, format!("session {id}"))?)
        } else if let Some(node) = rest.strip_prefix("fleet/") {
            Record::Member(node.to_string(), json(value, format!("data plane {node}"))?)
        } else if let Some(name) = rest.strip_prefix("tls/cert/") {
            let cert = value
                .map(|v| {
                    <v1::Certificate as prost::Message>::decode(v)
                        .map_err(|e| bad(format!("certificate {name}"), &e))
                })
                .transpose()?;
            Record::Certificate(name.to_string(), cert.map(Arc::new))
        } else if let Some(token) = rest.strip_prefix("tls/challenge/") {
            let answer = value.map(|v| String::from_utf8_lossy(v).into_owned());
            Record::Challenge(token.to_string(), answer)
        } else if let Some(id) = rest.strip_prefix("replicas/") {
            Record::Replica(id.to_string(), value.is_some())
        } else if rest == ACME_ACCOUNT {
            match value {
                Some(v) => Record::AcmeAccount(v.to_vec()),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        }))
    }

    /// Adds this write to `batch`, as the writer's batch had it.
    pub(super) fn into_batch(self, batch: &mut Batch) {
        match self {
            Record::Version(v) => batch.version = Some(v),
            Record::RouteReserved(r) => batch.route_reserved = Some(r),
            Record::Session(_, Some(r)) => batch.put.push(*r),
            Record::Session(id, None) => batch.delete.push(id),
            Record::Member(_, Some(m)) => batch.fleet_put.push(m),
            Record::Member(node, None) => batch.fleet_delete.push(node),
            Record::Certificate(_, Some(c)) => batch.certificates_put.push(c),
            Record::Certificate(name, None) => batch.certificates_delete.push(name),
            Record::Challenge(token, Some(key_authorization)) => {
                batch.challenges_put.push(v1::AcmeChallenge {
                    token,
                    key_authorization,
                })
            }
            Record::Challenge(token, None) => batch.challenges_delete.push(token),
            Record::AcmeAccount(a) => batch.acme_account = Some(a),
            Record::Replica(..) => {}
        }
    }

    pub(super) fn into_loaded(self, loaded: &mut Loaded) {
        match self {
            Record::Version(v) => loaded.version = v,
            Record::RouteReserved(r) => loaded.route_reserved = r,
            Record::Session(_, Some(r)) => loaded.sessions.push(*r),
            Record::Member(_, Some(m)) => loaded.fleet.push(m),
            Record::Certificate(_, Some(c)) => loaded
                .certificates
                .push(Arc::try_unwrap(c).unwrap_or_else(|c| c.as_ref().clone())),
            Record::Challenge(token, Some(answer)) => loaded.challenges.push((token, answer)),
            Record::AcmeAccount(a) => loaded.acme_account = Some(a),
            Record::Replica(..)
            | Record::Session(_, None)
            | Record::Member(_, None)
            | Record::Certificate(_, None)
            | Record::Challenge(_, None) => {}
        }
    }
}

/// One key write under the prefix: a value to put, or `None` to delete.
pub(super) type Write = (String, Option<Vec<u8>>);

/// The key writes that store `batch`: the inverse of `Record::decode` and
/// `Record::into_batch`.
pub(super) fn writes(batch: &Batch) -> Result<Vec<Write>, serde_json::Error> {
    let mut out = Vec::new();
    if let Some(v) = batch.version {
        out.push(("meta/version".into(), Some(v.to_string().into_bytes())));
    }
    if let Some(r) = batch.route_reserved {
        out.push((
            "meta/route_reserved".into(),
            Some(r.to_string().into_bytes()),
        ));
    }
    for id in &batch.delete {
        out.push((format!("sessions/{id}"), None));
    }
    for record in &batch.put {
        out.push((
            format!("sessions/{}", record.id),
            Some(serde_json::to_vec(record)?),
        ));
    }
    for node in &batch.fleet_delete {
        out.push((format!("fleet/{node}"), None));
    }
    for member in &batch.fleet_put {
        out.push((
            format!("fleet/{}", member.node_id),
            Some(serde_json::to_vec(member)?),
        ));
    }
    for name in &batch.certificates_delete {
        out.push((format!("tls/cert/{name}"), None));
    }
    for cert in &batch.certificates_put {
        out.push((
            format!("tls/cert/{}", cert.name),
            Some(prost::Message::encode_to_vec(cert.as_ref())),
        ));
    }
    for token in &batch.challenges_delete {
        out.push((format!("tls/challenge/{token}"), None));
    }
    for c in &batch.challenges_put {
        out.push((
            format!("tls/challenge/{}", c.token),
            Some(c.key_authorization.clone().into_bytes()),
        ));
    }
    if let Some(account) = &batch.acme_account {
        out.push((ACME_ACCOUNT.into(), Some(account.clone())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> SessionRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "service": "web", "instance": "web-1", "maintenance_port": 0,
            "metadata": {}, "peer_ip": null, "connected_at_ms": 1, "last_apply_ms": null,
            "routes": [], "headers": [], "options": [], "health": [], "ratelimit": [],
            "breaker": [], "maintenance": [], "maintenance_backend": null, "drain": null,
            "replica": "r1",
        }))
        .unwrap()
    }

    #[test]
    fn a_watched_revision_comes_back_as_the_batch_its_writer_committed() {
        let batch = Batch {
            version: Some(7),
            route_reserved: Some(2048),
            put: vec![session("s1")],
            delete: vec!["s2".into()],
            fleet_put: vec![MemberRecord {
                node_id: "dp".into(),
                address: "a".into(),
                acked_version: 7,
                last_seen_unix_ms: 1,
                replica: "r1".into(),
                state: "connected".into(),
                features: Vec::new(),
            }],
            fleet_delete: vec!["dp-old".into()],
            certificates_put: vec![Arc::new(v1::Certificate {
                name: "file:a".into(),
                ..Default::default()
            })],
            certificates_delete: vec!["file:b".into()],
            challenges_put: vec![v1::AcmeChallenge {
                token: "t".into(),
                key_authorization: "t.k".into(),
            }],
            challenges_delete: vec!["u".into()],
            acme_account: Some(b"{}".to_vec()),
        };
        let mut back = Batch::default();
        for (key, value) in writes(&batch).unwrap() {
            Record::decode(&key, value.as_deref())
                .unwrap()
                .unwrap_or_else(|| panic!("{key} is not a known key"))
                .into_batch(&mut back);
        }
        assert_eq!(format!("{back:?}"), format!("{batch:?}"));
        assert_eq!(back.put[0].replica, "r1");
    }

    #[test]
    fn a_replica_that_went_is_seen_and_unknown_keys_are_skipped() {
        assert!(matches!(
            Record::decode("replicas/r2", None),
            Ok(Some(Record::Replica(id, false))) if id == "r2"
        ));
        assert!(matches!(
            Record::decode("something/else", Some(b"?")),
            Ok(None)
        ));
    }

    #[test]
    fn an_unreadable_record_is_an_error_that_names_it() {
        let err = Record::decode("sessions/s9", Some(b"{not json"))
            .err()
            .unwrap();
        assert!(err.starts_with("session s9: "), "{err}");
        let err = Record::decode("tls/cert/x", Some(b"\xff\xff"))
            .err()
            .unwrap();
        assert!(err.starts_with("certificate x: "), "{err}");
    }
}
