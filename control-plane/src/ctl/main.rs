//! porticoctl: the operator's view of a control plane, through its operator
//! API only: pushes as they happen, data planes and their versions, routes.

use anyhow::Context;
use clap::Parser;
use portico_cp::cli::ctl::{Args, Cmd};
use portico_proto::json::{route_json, settings_json};
use portico_proto::v1::{self, operator_service_client::OperatorServiceClient, watch_event::Event};
use portico_proto::RouteSpec;
use serde_json::{json, Value};
use tonic::transport::Channel;

fn time(ms: i64) -> String {
    portico_proto::time::rfc3339(portico_proto::time::from_unix_ms(ms))
}

/// A time that may be unknown (0 on the wire).
fn maybe_time(ms: i64) -> Value {
    if ms > 0 {
        json!(time(ms))
    } else {
        Value::Null
    }
}

/// Prints rows as a left-aligned table under a header.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn routes_table(routes: &[RouteSpec]) {
    let rows = routes
        .iter()
        .map(|r| {
            let mut state = Vec::new();
            if r.maintenance.is_some() {
                state.push("maintenance");
            }
            if r.drain.is_some() {
                state.push("draining");
            }
            vec![
                r.route_id.clone(),
                r.service.clone(),
                r.domains.join(","),
                r.path.clone(),
                r.backend.to_string(),
                r.priority.to_string(),
                state.join(","),
            ]
        })
        .collect();
    table(
        &[
            "ROUTE", "SERVICE", "DOMAINS", "PATH", "BACKEND", "PRIORITY", "STATE",
        ],
        rows,
    );
}

async fn watch(mut client: OperatorServiceClient<Channel>, as_json: bool) -> anyhow::Result<()> {
    let mut stream = client
        .watch_config(v1::WatchConfigRequest {})
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(Event::Push(p)) if as_json => println!(
                "{}",
                json!({"event": "push", "version": p.version, "time": time(p.committed_at_unix_ms),
                       "added": p.added, "changed": p.changed, "removed": p.removed, "sent_to": p.sent_to,
                       "bytes": p.bytes})
            ),
            Some(Event::Push(p)) => println!(
                "push v{} at {}: +[{}] ~[{}] -[{}] ({} bytes) to [{}]",
                p.version,
                time(p.committed_at_unix_ms),
                p.added.join(","),
                p.changed.join(","),
                p.removed.join(","),
                p.bytes,
                p.sent_to.join(",")
            ),
            Some(Event::Answer(a)) if as_json => println!(
                "{}",
                json!({"event": if a.ok { "ack" } else { "nack" }, "version": a.version,
                       "node_id": a.node_id, "reason": if a.ok { Value::Null } else { json!(a.reason) }})
            ),
            Some(Event::Answer(a)) if a.ok => println!("ack  v{} {}", a.version, a.node_id),
            Some(Event::Answer(a)) => println!("nack v{} {}: {}", a.version, a.node_id, a.reason),
            Some(Event::Member(m)) if as_json => println!(
                "{}",
                json!({"event": "member", "node_id": m.node_id, "state": m.state, "time": time(m.at_unix_ms)})
            ),
            Some(Event::Member(m)) => println!(
                "data plane {} {} at {}",
                m.node_id,
                m.state,
                time(m.at_unix_ms)
            ),
            None => {}
        }
    }
    Ok(())
}

fn certs(list: &v1::ListCertificatesResponse, as_json: bool) {
    if as_json {
        let now = portico_proto::time::unix_ms(std::time::SystemTime::now());
        println!("{}", portico_cp::certs::list_json(list, now));
        return;
    }
    let rows = list
        .certificates
        .iter()
        .map(|c| {
            vec![
                c.domains.join(","),
                c.source.clone(),
                time(c.not_after_unix_ms),
                c.serial.clone(),
                c.served_by.join(","),
            ]
        })
        .collect();
    println!("version {}", list.version);
    table(
        &["DOMAINS", "SOURCE", "NOT AFTER", "SERIAL", "SERVED BY"],
        rows,
    );
    if !list.pending.is_empty() {
        println!();
        let rows = list
            .pending
            .iter()
            .map(|p| {
                vec![
                    p.domain.clone(),
                    maybe_time(p.next_attempt_unix_ms)
                        .as_str()
                        .unwrap_or("-")
                        .to_string(),
                    p.last_error.clone(),
                ]
            })
            .collect();
        table(&["WAITING FOR ACME", "NEXT ATTEMPT", "LAST ERROR"], rows);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = args.tls.client(&args.control_plane)?;
    let mut endpoint = tonic::transport::Endpoint::from_shared(args.control_plane.clone())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.control_plane))?;
    let mut client = OperatorServiceClient::new(channel);
    match args.command {
        Cmd::Watch => watch(client, args.json).await?,
        Cmd::Dataplanes => {
            let list = client
                .list_data_planes(v1::ListDataPlanesRequest {})
                .await?
                .into_inner();
            dataplanes(&list, args.json);
        }
        Cmd::Replicas => {
            let list = client
                .list_replicas(v1::ListReplicasRequest {})
                .await?
                .into_inner();
            replicas(&list, args.json);
        }
        Cmd::Certs => {
            let list = client
                .list_certificates(v1::ListCertificatesRequest {})
                .await?
                .into_inner();
            certs(&list, args.json);
        }
        Cmd::Sites => {
            let list = client
                .list_sites(v1::ListSitesRequest {})
                .await?
                .into_inner();
            sites(&list, args.json);
        }
        Cmd::Routes | Cmd::Snapshot => {
            let snap = client
                .get_snapshot(v1::GetSnapshotRequest {})
                .await?
                .into_inner();
            routes(snap, &args.command, args.json)?;
        }
    }
    Ok(())
}

/// `porticoctl sites`: each site file, then the global file's state.
fn sites(list: &v1::ListSitesResponse, as_json: bool) {
    if as_json {
        println!("{:#}", portico_cp::sites::status::list_json(list));
        return;
    }
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows = list
        .sites
        .iter()
        .map(|s| {
            vec![
                dash(&s.name),
                s.file.clone(),
                s.enabled.to_string(),
                s.routes.to_string(),
                if s.version > 0 {
                    s.version.to_string()
                } else {
                    "-".into()
                },
                dash(&s.error),
                s.warnings.join("; "),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "FILE",
            "ENABLED",
            "ROUTES",
            "VERSION",
            "LAST ERROR",
            "WARNINGS",
        ],
        rows,
    );
    if !list.global_file.is_empty() {
        println!(
            "\nglobal {}: {}{}",
            list.global_file,
            if list.global_error.is_empty() {
                "ok"
            } else {
                &list.global_error
            },
            if list.global_warnings.is_empty() {
                String::new()
            } else {
                format!(" (warnings: {})", list.global_warnings.join("; "))
            }
        );
    }
}

/// `porticoctl dataplanes`: the fleet, every replica's planes.
fn dataplanes(list: &v1::ListDataPlanesResponse, as_json: bool) {
    if as_json {
        let planes: Vec<Value> = list
            .data_planes
            .iter()
            .map(|p| {
                json!({
                    "node_id": p.node_id,
                    "address": p.address,
                    "state": p.state,
                    "connected_since": maybe_time(p.connected_since_unix_ms),
                    "last_seen": maybe_time(p.last_seen_unix_ms),
                    "acked_version": p.acked_version,
                    "lag": p.lag,
                    "replica": p.replica,
                    "last_nack": if p.last_nack_reason.is_empty() { Value::Null } else {
                        json!({"version": p.last_nack_version, "reason": p.last_nack_reason})
                    },
                })
            })
            .collect();
        println!("{}", Value::Array(planes));
    } else {
        let rows = list
            .data_planes
            .iter()
            .map(|p| {
                vec![
                    p.node_id.clone(),
                    p.state.clone(),
                    p.address.clone(),
                    maybe_time(p.connected_since_unix_ms)
                        .as_str()
                        .unwrap_or("-")
                        .to_string(),
                    p.acked_version.to_string(),
                    p.lag.to_string(),
                    if p.last_nack_reason.is_empty() {
                        "-".into()
                    } else {
                        format!("v{}: {}", p.last_nack_version, p.last_nack_reason)
                    },
                    p.replica.clone(),
                ]
            })
            .collect();
        println!("version {}", list.version);
        table(
            &[
                "NODE ID",
                "STATE",
                "ADDRESS",
                "CONNECTED SINCE",
                "ACKED",
                "LAG",
                "LAST NACK",
                "REPLICA",
            ],
            rows,
        );
    }
}

/// `porticoctl replicas`: the live control-plane replicas, this one marked.
fn replicas(list: &v1::ListReplicasResponse, as_json: bool) {
    if as_json {
        let replicas: Vec<Value> = list
            .replicas
            .iter()
            .map(portico_cp::observe::dashboard::replica_json)
            .collect();
        println!("{}", Value::Array(replicas));
    } else {
        let rows = list
            .replicas
            .iter()
            .map(|r| {
                let marked = if r.is_self {
                    format!("{} *", r.id)
                } else {
                    r.id.clone()
                };
                vec![
                    marked,
                    r.registry.clone(),
                    r.grpc.clone(),
                    r.admin.clone(),
                    time(r.started_unix_ms),
                ]
            })
            .collect();
        table(&["REPLICA", "REGISTRY", "GRPC", "ADMIN", "STARTED"], rows);
    }
}

/// `porticoctl routes` and `snapshot`: the current configuration's routes,
/// every one checked (a route that does not convert is an error, never left out).
fn routes(snap: v1::GetSnapshotResponse, command: &Cmd, as_json: bool) -> anyhow::Result<()> {
    let routes = snap
        .snapshot
        .map(|s| s.routes)
        .unwrap_or_default()
        .iter()
        .map(RouteSpec::try_from)
        .collect::<Result<Vec<_>, _>>()
        .context("the control plane sent an invalid route")?;
    let view = |r: &RouteSpec| {
        let mut v = route_json(r);
        if matches!(command, Cmd::Snapshot) {
            // Also nested, as snapshot consumers have read them so far.
            v["settings"] = settings_json(&r.settings);
        }
        v
    };
    match (command, as_json) {
        (Cmd::Routes, true) => {
            println!("{}", Value::Array(routes.iter().map(view).collect()))
        }
        (Cmd::Snapshot, true) => println!(
            "{}",
            json!({"version": snap.version, "routes": routes.iter().map(view).collect::<Vec<_>>()})
        ),
        _ => {
            println!("version {}, {} routes", snap.version, routes.len());
            routes_table(&routes);
        }
    }
    Ok(())
}
