//! `events.md`: the events services subscribe to (`EVENT|type|{json}`)
//! and the operator events of `/api/v1/events`, with their payloads.

use portico_cp::observe::dashboard::{event_json, OPERATOR_EVENTS};
use portico_cp::protocol::command::EventType;
use portico_proto::v1::{self, watch_event::Event};

use super::markdown::{code, header, table};

/// One event of each operator kind, to read the fields its view has.
pub fn operator_samples() -> Vec<v1::WatchEvent> {
    let answer = |ok| {
        Event::Answer(v1::PlaneAnswer {
            ok,
            ..Default::default()
        })
    };
    [
        Event::Push(Default::default()),
        answer(true),
        answer(false),
        Event::Member(Default::default()),
    ]
    .into_iter()
    .map(|event| v1::WatchEvent { event: Some(event) })
    .collect()
}

pub fn page() -> String {
    let mut out = header(
        "Events",
        "Events a session subscribes to with `SUBSCRIBE|S|type` come to its home connection as \
         `EVENT|type|{json}` lines between replies (`docs/PROTOCOL.md`). \
         Operator events are what `porticoctl watch` and the dashboard's `/api/v1/events` show.",
    );
    let rows: Vec<Vec<String>> = EventType::EVERY
        .iter()
        .map(|e| {
            let (when, fields) = e.doc();
            let payload = fields
                .iter()
                .map(|f| code(f))
                .collect::<Vec<_>>()
                .join(", ");
            vec![code(e.as_str()), when.to_string(), payload]
        })
        .collect();
    out.push_str("\n## Session events\n");
    out.push_str(&table(&["type", "sent when", "payload fields"], &rows));
    let rows: Vec<Vec<String>> = operator_samples()
        .into_iter()
        .filter_map(event_json)
        .map(|view| {
            let kind = view["type"].as_str().unwrap_or_default().to_string();
            let when = OPERATOR_EVENTS
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, when)| when.to_string())
                .unwrap_or_default();
            let fields: Vec<String> = view
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .filter(|k| *k != "type")
                .map(|k| code(k))
                .collect();
            vec![code(&kind), when, fields.join(", ")]
        })
        .collect();
    out.push_str("\n## Operator events\n");
    out.push_str(&table(&["type", "sent when", "fields"], &rows));
    out
}
