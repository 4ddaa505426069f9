//! Wire compatibility of portico.v1: bytes written by today's schema must
//! keep decoding the same way. A change of a field number or type breaks
//! these pinned encodings; see the rules at the top of portico.proto.

use portico_proto::v1;
use prost::Message;

#[test]
fn pinned_route_encoding_decodes() {
    // Route { route_id: "r1" (1), session_id: "s" (2, reserved since), service: "w" (3),
    // domains: ["a.com"] (5), path: "/" (6), backend_url: "http://b" (7), priority: 7 (8) }
    let pinned: &[u8] = &[
        0x0a, 0x02, b'r', b'1', 0x12, 0x01, b's', 0x1a, 0x01, b'w', 0x2a, 0x05, b'a', b'.', b'c',
        b'o', b'm', 0x32, 0x01, b'/', 0x3a, 0x08, b'h', b't', b't', b'p', b':', b'/', b'/', b'b',
        0x40, 0x07,
    ];
    let route = v1::Route::decode(pinned).unwrap();
    assert_eq!(route.route_id, "r1");
    assert_eq!(route.service, "w");
    assert_eq!(route.domains, vec!["a.com"]);
    assert_eq!(route.path, "/");
    assert_eq!(route.backend_url, "http://b");
    assert_eq!(route.priority, 7);
    // The session id an older control plane sent (field 2) is read past and
    // never kept: encoded again, the route is the same without it.
    let mut without_id = pinned[..4].to_vec();
    without_id.extend_from_slice(&pinned[7..]);
    assert_eq!(route.encode_to_vec(), without_id);
    // The owner's handle is field 12.
    let owned = v1::Route {
        owner: "w-1#0123abcd".into(),
        ..Default::default()
    };
    assert_eq!(&owned.encode_to_vec()[..2], &[0x62, 0x0c]);
}

#[test]
fn pinned_push_and_hello_encodings_decode() {
    // ConfigPush { version: 5 (1), base_version: 4 (2), delta (4): { removed: ["r9"] (2) } }
    let pinned: &[u8] = &[0x08, 0x05, 0x10, 0x04, 0x22, 0x04, 0x12, 0x02, b'r', b'9'];
    let push = v1::ConfigPush::decode(pinned).unwrap();
    assert_eq!((push.version, push.base_version), (5, 4));
    match push.body {
        Some(v1::config_push::Body::Delta(d)) => assert_eq!(d.removed, vec!["r9"]),
        other => panic!("{other:?}"),
    }
    // DataPlaneMessage { hello (1): { node_id: "n" (1), applied_version: 3 (2) } }
    let pinned: &[u8] = &[0x0a, 0x05, 0x0a, 0x01, b'n', 0x10, 0x03];
    match v1::DataPlaneMessage::decode(pinned).unwrap().msg {
        Some(v1::data_plane_message::Msg::Hello(h)) => {
            assert_eq!((h.node_id.as_str(), h.applied_version), ("n", 3))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_fields_from_a_newer_schema_are_ignored() {
    // A Route with an extra field 99 (varint) that this schema does not know.
    let mut bytes = v1::Route {
        route_id: "r2".into(),
        ..Default::default()
    }
    .encode_to_vec();
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    assert_eq!(v1::Route::decode(&bytes[..]).unwrap().route_id, "r2");
}

#[test]
fn pinned_certificate_changes_decode() {
    // Delta { certificates_upserted (3): [{ name: "c" (1), source: "file" (5) }],
    // certificates_removed (4): ["d"], challenges_upserted (5): [{ token: "t" (1),
    // key_authorization: "k" (2) }], challenges_removed (6): ["u"] }
    let pinned: &[u8] = &[
        0x1a, 0x09, 0x0a, 0x01, b'c', 0x2a, 0x04, b'f', b'i', b'l', b'e', 0x22, 0x01, b'd', 0x2a,
        0x06, 0x0a, 0x01, b't', 0x12, 0x01, b'k', 0x32, 0x01, b'u',
    ];
    let delta = v1::Delta::decode(pinned).unwrap();
    assert_eq!(delta.certificates_upserted[0].name, "c");
    assert_eq!(delta.certificates_upserted[0].source, "file");
    assert_eq!(delta.certificates_removed, ["d"]);
    assert_eq!(delta.challenges_upserted[0].key_authorization, "k");
    assert_eq!(delta.challenges_removed, ["u"]);
    assert_eq!(delta.encode_to_vec(), pinned);
    // An older data plane, which knows only routes, reads the same bytes as
    // an empty delta and ignores what it does not know.
    assert!(delta.upserted.is_empty() && delta.removed.is_empty());
}
