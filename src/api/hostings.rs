//! `/api/v1/host*`: a user's hosting (create, read, delete), its access URLs and routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::extract::OptionalJson;
use super::{rfc3339, AppState};
use crate::auth::{AdminUser, AuthUser};
use crate::hosting::RouteInfo;
use crate::store::{Hosting, HostingId, Role};

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateHostingRequest {
    /// One OpenSSH public key line. Without it, the user's registered keys are installed;
    /// with none of those either, roost generates a key pair and returns the private half once.
    pub ssh_public_key: Option<String>,
    /// A password for logging in on the VM's serial console (the dashboard's console) when
    /// SSH is broken; SSH never accepts it. Same rules as account passwords. Stored only
    /// as a SHA-512 crypt hash.
    pub console_password: Option<String>,
    /// Generate a new key pair even though the user has registered keys (its private half
    /// is answered once). Cannot be combined with `ssh_public_key`.
    #[serde(default)]
    pub generate_key: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct HostingView {
    pub id: String,
    pub slug: String,
    /// `provisioning`, `booting`, `running`, `paused`, `stopped`, `failed`, `deleting`.
    pub state: String,
    /// Why the hosting failed, when it did.
    pub reason: Option<String>,
    pub ip: String,
    pub ssh_port: u16,
    pub created_at: String,
    /// Only in the answer to the creation that generated a key pair; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The hosting's own domains (in `GET /api/v1/host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<super::domains::DomainView>>,
    /// The owner lets the VM sleep while nobody visits (`PUT /api/v1/host/sleep`).
    pub sleep_when_idle: bool,
    /// The VM sleeps (state `paused`): the next visit wakes it.
    pub asleep: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AccessUrls {
    pub web: String,
    pub web_host: String,
    pub ssh: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RouteView {
    pub slug: String,
    pub hosting_id: String,
    /// The same URLs as `access-urls` gives the owner.
    pub web: String,
    pub web_host: String,
    pub web_path: String,
    pub upstream: Option<String>,
    pub ssh_port: Option<u16>,
    /// `live`, `provisioning`, `booting`, `stopped`, `failed`.
    pub status: String,
    /// Whether the route is in the proxy's table and the VM answers.
    pub live: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReloadView {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, get_mine))
        .routes(routes!(events))
        .routes(routes!(delete))
        .routes(routes!(act))
        .routes(routes!(access_urls))
        .routes(routes!(proxy_info))
        .routes(routes!(reload_proxy))
}

pub(super) fn view(h: &Hosting, private_key: Option<String>) -> HostingView {
    HostingView {
        id: h.id.to_string(),
        slug: h.slug.clone(),
        state: h.state.as_str().into(),
        reason: h.reason.as_deref().map(public_reason),
        ip: h.ip.to_string(),
        ssh_port: h.ssh_port,
        created_at: rfc3339(h.created_at),
        private_key,
        domains: None,
        sleep_when_idle: h.sleep_when_idle,
        asleep: h.asleep,
    }
}

/// What an owner is told of a failure. A reason that names the host's paths or errors
/// (a failed set-up step's error chain) becomes the step alone; administrators see the
/// whole reason in `/api/v1/admin/vms` and `roost vm show`.
fn public_reason(reason: &str) -> String {
    let internal = reason.contains('/') || reason.contains("error") || reason.contains("errno");
    if !internal {
        return reason.to_owned();
    }
    let step = reason
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ' || *c == '-')
        .collect::<String>();
    format!("setting up the VM failed at step `{step}`; an administrator can see the details")
}

/// Creates the caller's hosting; provisioning continues in the background.
#[utoipa::path(post, path = "/api/v1/host", tag = "hosting", security(("bearer" = [])),
    request_body = CreateHostingRequest,
    responses(
        (status = 202, body = HostingView),
        (status = 409, description = "the user already has a hosting", body = ErrorBody),
        (status = 422, description = "the key does not parse", body = ErrorBody),
        (status = 429, description = "the account's operation budget is spent; see Retry-After", body = ErrorBody),
        (status = 503, description = "no capacity, or VM hosting unavailable on this host", body = ErrorBody),
        (status = 507, description = "not enough disk space", body = ErrorBody),
    ))]
async fn create(
    State(st): State<AppState>,
    user: AuthUser,
    OptionalJson(req): OptionalJson<CreateHostingRequest>,
) -> Result<(StatusCode, Json<HostingView>), ApiError> {
    spend(&st, &user)?;
    if req.generate_key && req.ssh_public_key.is_some() {
        return Err(ApiError::field(
            "generate_key",
            "generate_key cannot be combined with ssh_public_key",
        ));
    }
    if let Some(pw) = &req.console_password {
        crate::auth::validate_password(pw)
            .map_err(|e| ApiError::field("console_password", format!("console password {e}")))?;
    }
    let created = st
        .hostings
        .create(
            user.id,
            &user.username,
            req.ssh_public_key.as_deref(),
            req.generate_key,
            req.console_password.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(view(&created.hosting, created.private_key)),
    ))
}

/// The caller's hosting with its live state.
#[utoipa::path(get, path = "/api/v1/host", tag = "hosting", security(("bearer" = [])),
    responses((status = 200, body = HostingView), (status = 404, body = ErrorBody)))]
async fn get_mine(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<Json<HostingView>, ApiError> {
    mine(&st, user.id)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("hosting"))
}

/// The user's hosting as `GET /api/v1/host` shows it, if they have one.
fn mine(st: &AppState, user: crate::store::UserId) -> Result<Option<HostingView>, ApiError> {
    let Some(h) = st.hostings.of_user(user)? else {
        return Ok(None);
    };
    let mut v = view(&h, None);
    v.domains = Some(
        st.domains
            .of(h.id)?
            .iter()
            .map(|d| super::domains::view(d, &st.cfg.domain))
            .collect(),
    );
    Ok(Some(v))
}

/// The caller's hosting, live: a Server-Sent Events stream whose `hosting` events carry
/// what `GET /api/v1/host` answers (or `null` when there is none), once at the start and
/// again whenever it changes. A comment every 15 s keeps idle connections open.
#[utoipa::path(get, path = "/api/v1/host/events", tag = "hosting", security(("bearer" = [])),
    responses((status = 200, description = "`text/event-stream` of `hosting` events", content_type = "text/event-stream", body = String)))]
async fn events(
    State(st): State<AppState>,
    user: AuthUser,
    head: super::extract::RequestHead,
) -> axum::response::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive};
    /// How often an idle stream asks whether its caller is still signed in.
    const RECHECK: std::time::Duration = std::time::Duration::from_secs(15);
    let rx = st.store.watch_user(user.id);
    let stream = futures::stream::unfold(
        (st, rx, None::<String>, true),
        move |(st, mut rx, last, first)| {
            let head = head.clone();
            async move {
                loop {
                    if !first {
                        tokio::select! {
                            changed = rx.changed() => if changed.is_err() {
                                return None;
                            },
                            () = tokio::time::sleep(RECHECK) => {}
                        }
                        // A logout or a disabled account ends the stream.
                        if !head.still_allowed(&st, false).await {
                            return None;
                        }
                    }
                    let now = match mine(&st, user.id) {
                        Ok(v) => serde_json::to_string(&v).unwrap_or_else(|_| "null".into()),
                        // A failed read is retried at the next change.
                        Err(_) if !first => continue,
                        Err(_) => "null".into(),
                    };
                    if last.as_deref() != Some(now.as_str()) {
                        let ev = Event::default().event("hosting").data(now.clone());
                        return Some((Ok(ev), (st, rx, Some(now), false)));
                    }
                }
            }
        },
    );
    axum::response::Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
}

/// Deletes a hosting (the owner's, or any for an admin); completes in the background.
#[utoipa::path(delete, path = "/api/v1/host/{id}", tag = "hosting", security(("bearer" = [])),
    params(("id" = String, Path, description = "hosting id")),
    responses((status = 202, body = HostingView), (status = 404, body = ErrorBody), (status = 429, description = "the account's operation budget is spent; see Retry-After", body = ErrorBody)))]
async fn delete(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<HostingView>), ApiError> {
    spend(&st, &user)?;
    let h = owned(&st, &user, &id)?;
    let h = st.hostings.delete(h.id, &user.username).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&h, None))))
}

/// Starts, stops or reboots the caller's VM; carried out in the background.
#[utoipa::path(post, path = "/api/v1/host/{id}/{action}", tag = "hosting", security(("bearer" = [])),
    params(("id" = String, Path, description = "hosting id"),
           ("action" = String, Path, description = "start | stop | reboot")),
    responses((status = 202, body = HostingView), (status = 404, body = ErrorBody), (status = 409, description = "the VM's state does not allow it", body = ErrorBody), (status = 429, description = "the account's operation budget is spent; see Retry-After", body = ErrorBody)))]
async fn act(
    State(st): State<AppState>,
    user: AuthUser,
    Path((id, action)): Path<(String, String)>,
) -> Result<(StatusCode, Json<HostingView>), ApiError> {
    let action = match action.as_str() {
        "start" => crate::hosting::lifecycle::Action::Start,
        "stop" => crate::hosting::lifecycle::Action::Stop,
        "reboot" => crate::hosting::lifecycle::Action::Reboot,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such action; use start, stop or reboot",
            ))
        }
    };
    spend(&st, &user)?;
    let h = owned(&st, &user, &id)?;
    let h = st.hostings.act(h.id, action, &user.username).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&h, None))))
}

/// The caller's own hosting (404 without one).
pub(super) fn my_hosting(st: &AppState, user: &AuthUser) -> Result<Hosting, ApiError> {
    st.hostings
        .of_user(user.id)?
        .ok_or_else(|| ApiError::not_found("hosting"))
}

/// Spends one of the caller's costly operations (`hosting::budget`); administrators are
/// exempt.
pub(super) fn spend(st: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    match user.role {
        Role::Admin => Ok(()),
        Role::User => Ok(st.hostings.spend(user.id)?),
    }
}

/// Finds a hosting the caller may touch. Someone else's hosting is a 404, not a 403, so
/// that ids cannot be probed.
fn owned(st: &AppState, user: &AuthUser, id: &str) -> Result<Hosting, ApiError> {
    let id: HostingId = id.parse().map_err(|_| ApiError::not_found("hosting"))?;
    match st.store.hosting(id)? {
        Some(h) if h.user == user.id || user.role == Role::Admin => Ok(h),
        _ => Err(ApiError::not_found("hosting")),
    }
}

/// How to reach the caller's site and VM.
#[utoipa::path(get, path = "/api/v1/host/access-urls", tag = "hosting", security(("bearer" = [])),
    responses((status = 200, body = AccessUrls), (status = 404, body = ErrorBody)))]
async fn access_urls(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<Json<AccessUrls>, ApiError> {
    let h = st
        .hostings
        .of_user(user.id)?
        .ok_or_else(|| ApiError::not_found("hosting"))?;
    let u = st.hostings.urls(&h);
    Ok(Json(AccessUrls {
        web: u.web,
        web_host: u.web_host,
        ssh: u.ssh,
    }))
}

fn route_view(r: RouteInfo) -> RouteView {
    RouteView {
        slug: r.slug,
        hosting_id: r.hosting_id,
        web: r.urls.web,
        web_host: r.urls.web_host,
        web_path: r.urls.web_path,
        upstream: r.upstream,
        ssh_port: r.ssh_port,
        status: r.status,
        live: r.live,
    }
}

/// The caller's routes and whether each is live (an admin sees every route).
#[utoipa::path(get, path = "/api/v1/host/proxy-info", tag = "hosting", security(("bearer" = [])),
    responses((status = 200, body = [RouteView])))]
async fn proxy_info(
    State(st): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<RouteView>>, ApiError> {
    let only = (user.role != Role::Admin).then_some(user.id);
    Ok(Json(
        st.hostings
            .routes_info(only)?
            .into_iter()
            .map(route_view)
            .collect(),
    ))
}

/// Rebuilds every route from the store and reports what changed (admin).
#[utoipa::path(post, path = "/api/v1/host/reload-proxy", tag = "hosting", security(("bearer" = [])),
    responses((status = 200, body = ReloadView), (status = 403, body = ErrorBody)))]
async fn reload_proxy(
    State(st): State<AppState>,
    admin: AdminUser,
) -> Result<Json<ReloadView>, ApiError> {
    let d = st.hostings.reload_routes(&admin.0.username).await?;
    Ok(Json(ReloadView {
        added: d.added,
        removed: d.removed,
        changed: d.changed,
        unchanged: d.unchanged,
    }))
}

#[cfg(test)]
mod tests {
    use super::public_reason;

    #[test]
    fn owners_see_no_host_details() {
        assert_eq!(
            public_reason("the guest did not answer on :80 and :22 within 300 s"),
            "the guest did not answer on :80 and :22 within 300 s"
        );
        let r = public_reason("overlay: qemu-img create /var/lib/roost/vms/01X/disk.qcow2: No such file or directory (os error 2)");
        assert_eq!(
            r,
            "setting up the VM failed at step `overlay`; an administrator can see the details"
        );
        assert!(!public_reason("tap: netlink request failed: error -17").contains("17"));
    }
}
