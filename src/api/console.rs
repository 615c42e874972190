//! The serial console over a WebSocket: `GET /api/v1/host/console` for the owner,
//! `GET /api/v1/admin/vms/{id}/console` for administrators. Every viewer of a VM shares
//! one hub (`vm::serial`); opening one is audited.
//!
//! Frames: binary both ways are terminal bytes (guest output; keystrokes). Text frames
//! from roost are JSON notices: `{"type":"hello","writable":true,"viewers":N}` first, then
//! `{"type":"viewers","count":N}` when that changes, and `{"type":"closed","reason":…}`
//! before roost closes. Text from the client may be `{"type":"resize","cols":C,"rows":R}`;
//! a serial line has no window size, so it is only acknowledged in the log.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::{PeerAddr, RequestHead};
use super::AppState;
use crate::auth::{AdminUser, AuthUser};
use crate::store::HostingId;
use crate::vm::serial::{ConsoleError, Viewer};

/// A viewer whose socket takes no frame for this long is dropped.
const SEND_DEADLINE: Duration = Duration::from_secs(10);
/// How often viewer counts are re-announced and the connection pinged.
const TICK: Duration = Duration::from_secs(5);
const PING_EVERY: u32 = 6;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mine))
        .routes(routes!(any))
}

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

fn upgrade(ws: Upgrade) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "websocket_required",
            format!("the console is a WebSocket: {e}"),
        )
    })
}

/// The owner's VM's serial console, live (WebSocket).
#[utoipa::path(get, path = "/api/v1/host/console", tag = "hosting", security(("bearer" = [])),
    responses(
        (status = 101, description = "WebSocket: binary frames are terminal bytes both ways"),
        (status = 400, description = "not a WebSocket handshake", body = ErrorBody),
        (status = 404, description = "no hosting", body = ErrorBody),
        (status = 409, description = "the VM is not running, or the console has too many viewers", body = ErrorBody),
    ))]
async fn mine(
    State(st): State<AppState>,
    user: AuthUser,
    PeerAddr(peer): PeerAddr,
    head: RequestHead,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    let ws = upgrade(ws)?;
    let h = st
        .hostings
        .of_user(user.id)?
        .ok_or_else(|| ApiError::not_found("hosting"))?;
    let access = Access { head, admin: false };
    open(st, ws, h.id, &user.username, peer, access).await
}

/// Any VM's serial console, live (WebSocket), for administrators.
#[utoipa::path(get, path = "/api/v1/admin/vms/{id}/console", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "hosting id")),
    responses(
        (status = 101, description = "WebSocket: binary frames are terminal bytes both ways"),
        (status = 400, description = "not a WebSocket handshake", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the VM is not running, or the console has too many viewers", body = ErrorBody),
    ))]
async fn any(
    State(st): State<AppState>,
    admin: AdminUser,
    PeerAddr(peer): PeerAddr,
    Path(id): Path<String>,
    head: RequestHead,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    let ws = upgrade(ws)?;
    let id = super::vms::parse_id(&id)?;
    let access = Access { head, admin: true };
    open(st, ws, id, &admin.0.username, peer, access).await
}

/// How a viewer got in, asked again every few seconds while it watches: a logout, a
/// disabled account or a lost admin role closes its console.
struct Access {
    head: RequestHead,
    admin: bool,
}

async fn open(
    st: AppState,
    ws: WebSocketUpgrade,
    id: HostingId,
    who: &str,
    peer: std::net::IpAddr,
    access: Access,
) -> Result<Response, ApiError> {
    let viewer = st.hostings.console(id).await?;
    let _ = st
        .store
        .audit(who, "console.open", &id.to_string(), &peer.to_string());
    let who = who.to_owned();
    tracing::info!(vm = %id, user = %who, %peer, "console opened");
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            let why = serve(socket, viewer, &st, &access).await;
            tracing::info!(vm = %id, user = %who, %peer, reason = why, "console closed");
        }))
}

fn notice(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Relays one viewer until either side ends; returns why it ended.
async fn serve(
    socket: WebSocket,
    mut viewer: Viewer,
    st: &AppState,
    access: &Access,
) -> &'static str {
    let (mut tx, mut rx) = socket.split();
    let mut count = viewer.hub.viewers();
    let hello = notice(serde_json::json!({"type": "hello", "writable": true, "viewers": count}));
    macro_rules! put {
        ($m:expr) => {
            match tokio::time::timeout(SEND_DEADLINE, tx.send($m)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return "the viewer went away",
                Err(_) => return "the viewer stopped reading",
            }
        };
    }
    put!(hello);
    let scrollback = std::mem::take(&mut viewer.scrollback);
    for chunk in scrollback.chunks(16 * 1024) {
        put!(Message::Binary(bytes::Bytes::copy_from_slice(chunk)));
    }
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            out = viewer.output.recv() => match out {
                Ok(b) => put!(Message::Binary(b)),
                Err(RecvError::Lagged(_)) => {
                    put!(notice(serde_json::json!({"type": "closed", "reason": "this viewer fell behind the console's output and was dropped; reconnect"})));
                    return "the viewer fell behind";
                }
                Err(RecvError::Closed) => {
                    put!(notice(serde_json::json!({"type": "closed", "reason": "the VM stopped"})));
                    return "the VM stopped";
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(keys))) => match viewer.hub.send(keys) {
                    Ok(()) | Err(ConsoleError::InputBusy) => {}
                    Err(ConsoleError::InputTooLarge(_)) => {
                        put!(notice(serde_json::json!({"type": "closed", "reason": "input frames are limited to 4096 bytes"})));
                        return "input too large";
                    }
                    Err(_) => {
                        put!(notice(serde_json::json!({"type": "closed", "reason": "the VM stopped"})));
                        return "the VM stopped";
                    }
                },
                Some(Ok(Message::Text(t))) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                        if v["type"] == "resize" {
                            tracing::debug!(cols = %v["cols"], rows = %v["rows"], "console viewer resized");
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return "the viewer closed",
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {
                if !access.head.still_allowed(st, access.admin).await {
                    put!(notice(serde_json::json!({"type": "closed", "reason": "your session ended; log in again"})));
                    return "the viewer's session ended";
                }
                let now = viewer.hub.viewers();
                if now != count {
                    count = now;
                    put!(notice(serde_json::json!({"type": "viewers", "count": count})));
                }
                ticks += 1;
                if ticks.is_multiple_of(PING_EVERY) {
                    put!(Message::Ping(bytes::Bytes::new()));
                }
            }
        }
    }
}
