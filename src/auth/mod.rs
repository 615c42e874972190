//! Accounts: argon2id hashes, JWT issue/verify, username rules, login and registration rate
//! limits, a cap on concurrent password hashing, and the axum extractors for a signed-in
//! user and an administrator.
//!
//! Owns the rules of who may do what. Knows the store's user records but no redb table,
//! and nothing of hostings or VMs. Errors are mapped to HTTP once, in `api::error`.

pub mod jwt;
pub mod password;
pub mod ratelimit;
pub mod session;
pub mod username;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::store::{NewUser, Role, Store, StoreError, User, UserId};
pub use jwt::{Claims, Jwt, TokenError};
pub use username::{validate_password, validate_username, PasswordPolicyError, UsernameError};

/// Everything that can refuse an account operation.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("invalid token")]
    BadToken(#[source] TokenError),
    #[error("the account of this token no longer exists")]
    UserGone,
    #[error("the token was revoked")]
    TokenRevoked,
    #[error("the account is disabled")]
    Disabled,
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("administrator role required")]
    Forbidden,
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The current password given to change it is not the account's.
    #[error("the current password is wrong")]
    WrongPassword,
    /// An account with a hosting cannot be deleted: the hosting goes first.
    #[error("the account has a hosting: delete it first")]
    HasHosting,
    #[error("too many login attempts")]
    RateLimited(Duration),
    #[error("too many accounts created from this address")]
    RegisterLimited(Duration),
    #[error("no password hashing slot became free in time")]
    Busy,
    // The cause is part of the message (and not a `#[source]`), so that an error chain
    // says it once.
    #[error("username {0}")]
    InvalidUsername(UsernameError),
    #[error("password {0}")]
    InvalidPassword(PasswordPolicyError),
    #[error("email must look like name@domain and be at most 254 characters")]
    InvalidEmail,
    #[error("username is already taken")]
    UsernameTaken,
    #[error("store")]
    Store(#[source] StoreError),
    #[error("password hashing")]
    Hash(#[source] password::HashError),
    #[error("background task failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("the session has ended; log in again")]
    SessionGone,
    #[error("refused a cross-site request: {0}")]
    CrossSite(&'static str),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken(_) => AuthError::UsernameTaken,
            StoreError::NoSuchUser => AuthError::NoSuchUser(String::new()),
            StoreError::HostingExists => AuthError::HasHosting,
            e => AuthError::Store(e),
        }
    }
}

/// A user proven by a valid token whose account still exists.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub username: String,
    pub role: Role,
}

/// An [`AuthUser`] whose role is admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

/// A freshly issued access token.
pub struct Token {
    pub access_token: String,
    pub expires_in: u64,
}

/// How long a password hash or check waits for a free slot before the caller is told to
/// come back (503 with `Retry-After`).
const HASH_WAIT: Duration = Duration::from_secs(10);

/// Runs password hashing on the blocking threads, at most `slots` at a time. Each argon2id
/// computation takes 19 MiB and a core for tens of milliseconds, so a burst of logins or
/// registrations must queue (briefly) rather than take the host's memory and CPU.
struct HashGate {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl HashGate {
    fn new(slots: usize, wait: Duration) -> HashGate {
        HashGate {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            wait,
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        // The permit moves into the blocking task: a client that goes away does not free
        // the slot while its hash still occupies a core.
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            f()
        })
        .await
        .map_err(AuthError::Join)
    }
}

/// The account service, shared by the API and the CLI.
pub struct Auth {
    store: Store,
    jwt: Jwt,
    limiter: ratelimit::LoginLimiter,
    register_limiter: ratelimit::RegisterLimiter,
    hashing: HashGate,
    session_ttl_secs: u64,
}

impl Auth {
    pub fn new(store: Store, secret: &[u8], cfg: &Config) -> Auth {
        Auth {
            store,
            jwt: Jwt::new(secret, cfg.auth.token_ttl_secs),
            limiter: ratelimit::LoginLimiter::new(
                cfg.auth.login_attempts,
                Duration::from_secs(cfg.auth.login_window_secs),
                cfg.auth.login_user_failures_per_hour,
            ),
            register_limiter: ratelimit::RegisterLimiter::new(cfg.auth.register_per_hour),
            hashing: HashGate::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                HASH_WAIT,
            ),
            session_ttl_secs: cfg.console.session_ttl_secs,
        }
    }

    /// Validates and creates an account. Hashing runs off the async threads. `peer` is the
    /// client's address for an API call (counted against `auth.register_per_hour`), `None`
    /// for the operator's CLI.
    pub async fn register(
        &self,
        peer: Option<IpAddr>,
        username: &str,
        password: &str,
        email: Option<&str>,
        role: Role,
        actor: &str,
    ) -> Result<User, AuthError> {
        validate_username(username).map_err(AuthError::InvalidUsername)?;
        validate_password(password).map_err(AuthError::InvalidPassword)?;
        if let Some(e) = email {
            if !valid_email(e) {
                return Err(AuthError::InvalidEmail);
            }
        }
        if self.store.user_by_name(username)?.is_some() {
            return Err(AuthError::UsernameTaken);
        }
        if let Some(ip) = peer {
            self.register_limiter
                .check(ip)
                .map_err(AuthError::RegisterLimited)?;
        }
        let hash = self.hash(password).await?;
        let store = self.store.clone();
        let (username, email, actor) = (
            username.to_owned(),
            email.map(str::to_owned),
            actor.to_owned(),
        );
        let user = tokio::task::spawn_blocking(move || {
            store.create_user(
                NewUser {
                    username: &username,
                    email: email.as_deref(),
                    password_hash: &hash,
                    role,
                },
                &actor,
            )
        })
        .await
        .map_err(AuthError::Join)??;
        tracing::info!(user = %user.username, id = %user.id, role = user.role.as_str(), "account created");
        Ok(user)
    }

    /// Checks credentials (rate-limited per address and per username) and issues a token.
    pub async fn login(
        &self,
        peer: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<Token, AuthError> {
        let user = self.check_credentials(peer, username, password).await?;
        self.issue(&user)
    }

    /// A new access token for `user` as it is now.
    pub fn issue(&self, user: &User) -> Result<Token, AuthError> {
        let access_token = self
            .jwt
            .issue(
                &user.id.to_string(),
                user.role,
                user.token_generation,
                jwt::unix_now(),
            )
            .map_err(AuthError::BadToken)?;
        Ok(Token {
            access_token,
            expires_in: self.jwt.ttl_secs(),
        })
    }

    /// Checks credentials like [`Auth::login`] and opens a browser session.
    pub async fn open_session(
        &self,
        peer: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<session::Grant, AuthError> {
        let user = self.check_credentials(peer, username, password).await?;
        let secret = session::new_secret();
        let now = crate::store::now();
        let s = crate::store::Session {
            user: user.id,
            csrf: session::new_secret(),
            created_at: now,
            expires_at: now + Duration::from_secs(self.session_ttl_secs),
        };
        self.store.add_session(&session::key(&secret), &s)?;
        tracing::info!(user = %user.username, %peer, "browser session opened");
        Ok(session::Grant {
            secret,
            csrf: s.csrf,
            max_age_secs: self.session_ttl_secs,
            user,
        })
    }

    /// The live account and session a cookie's secret belongs to.
    pub fn session(&self, secret: &str) -> Result<(AuthUser, crate::store::Session), AuthError> {
        let (user, s) = self.session_account(secret)?;
        Ok((
            AuthUser {
                id: user.id,
                username: user.username,
                role: user.role,
            },
            s,
        ))
    }

    /// [`Auth::session`] with the whole account record.
    pub fn session_account(
        &self,
        secret: &str,
    ) -> Result<(User, crate::store::Session), AuthError> {
        let s = self
            .store
            .session(&session::key(secret))?
            .ok_or(AuthError::SessionGone)?;
        let user = self.store.user(s.user)?.ok_or(AuthError::UserGone)?;
        if user.disabled_at.is_some() {
            return Err(AuthError::Disabled);
        }
        Ok((user, s))
    }

    /// Ends the session of a cookie's secret. `true` if there was one.
    pub fn close_session(&self, secret: &str) -> Result<bool, AuthError> {
        Ok(self.store.remove_session(&session::key(secret))?)
    }

    /// The account `username`, proved by its `password` when one is given (checked and
    /// rate-limited like a login from `peer`; a wrong one is [`AuthError::WrongPassword`]),
    /// or taken as it is for the operator (`None`).
    async fn confirm(
        &self,
        peer: Option<IpAddr>,
        username: &str,
        password: Option<&str>,
    ) -> Result<User, AuthError> {
        match password {
            Some(pw) => {
                let peer = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
                self.check_credentials(peer, username, pw)
                    .await
                    .map_err(|e| match e {
                        AuthError::InvalidCredentials => AuthError::WrongPassword,
                        e => e,
                    })
            }
            None => self
                .store
                .user_by_name(username)?
                .ok_or_else(|| AuthError::NoSuchUser(username.to_owned())),
        }
    }

    /// The argon2id hash of `password`, computed off the async threads.
    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let pw = password.to_owned();
        self.hashing
            .run(move || password::hash_password(&pw))
            .await?
            .map_err(AuthError::Hash)
    }

    /// The account behind a username and password, rate-limited per address and username.
    async fn check_credentials(
        &self,
        peer: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<User, AuthError> {
        self.limiter
            .check(peer, username)
            .map_err(AuthError::RateLimited)?;
        let user = self.store.user_by_name(username)?;
        let stored = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        let pw = password.to_owned();
        let ok = self
            .hashing
            .run(move || password::verify_password(&pw, &stored))
            .await?;
        let user = match (ok, user) {
            (true, Some(u)) => u,
            _ => {
                tracing::info!(user = %username, %peer, "login refused");
                self.limiter.failed(peer, username);
                return Err(AuthError::InvalidCredentials);
            }
        };
        // Said only after the password proved the caller owns the account.
        if user.disabled_at.is_some() {
            tracing::info!(user = %username, %peer, "login refused: account disabled");
            return Err(AuthError::Disabled);
        }
        self.limiter.succeeded(peer, username);
        Ok(user)
    }

    /// Resolves a bearer token to a live account.
    pub fn authenticate(&self, token: &str) -> Result<AuthUser, AuthError> {
        let claims = self.jwt.verify(token).map_err(AuthError::BadToken)?;
        let id: UserId = claims.sub.parse().map_err(|_| AuthError::UserGone)?;
        let user = self.store.user(id)?.ok_or(AuthError::UserGone)?;
        if user.disabled_at.is_some() {
            return Err(AuthError::Disabled);
        }
        if claims.gen != user.token_generation {
            return Err(AuthError::TokenRevoked);
        }
        Ok(AuthUser {
            id: user.id,
            username: user.username,
            // The stored role wins over the token's: a demoted admin loses rights at once.
            role: user.role,
        })
    }

    /// Every account, in username order.
    pub fn users(&self) -> Result<Vec<User>, AuthError> {
        let mut users = self.store.users()?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    /// Gives or takes the administrator role. Takes effect on the next request, whatever
    /// the account's tokens say (the stored role wins).
    pub fn set_admin(&self, username: &str, admin: bool, actor: &str) -> Result<User, AuthError> {
        let role = if admin { Role::Admin } else { Role::User };
        let u = self
            .store
            .modify_user(username, actor, "user.set_role", |u| {
                u.role = role;
                Ok::<_, AuthError>(role.as_str().to_owned())
            })
            .map_err(|e| named(e, username))?;
        tracing::info!(user = %u.username, role = role.as_str(), %actor, "role changed");
        Ok(u)
    }

    /// Changes account `username` with `f` and ends everything it is signed in with: the
    /// token generation moves on (every token issued so far is refused) and its browser
    /// sessions are deleted. Audited as `action` with `detail`.
    fn revoking(
        &self,
        username: &str,
        actor: &str,
        action: &str,
        detail: &str,
        f: impl FnOnce(&mut User),
    ) -> Result<User, AuthError> {
        let u = self
            .store
            .modify_user(username, actor, action, |u| {
                f(u);
                u.token_generation = u.token_generation.wrapping_add(1);
                Ok::<_, AuthError>(detail.to_owned())
            })
            .map_err(|e| named(e, username))?;
        self.store.remove_sessions_of(u.id)?;
        Ok(u)
    }

    /// Disables an account: it cannot log in, and every token issued so far is refused
    /// from the next request on. Its hosting keeps running (an operator's separate call).
    pub fn disable(&self, username: &str, actor: &str) -> Result<User, AuthError> {
        let u = self.revoking(username, actor, "user.disable", "tokens revoked", |u| {
            if u.disabled_at.is_none() {
                u.disabled_at = Some(crate::store::now());
            }
        })?;
        tracing::info!(user = %u.username, %actor, "account disabled; its tokens and sessions are revoked");
        Ok(u)
    }

    /// Sets a new password. `current`: the owner's proof, checked and rate-limited like a
    /// login from `peer` (a wrong one is [`AuthError::WrongPassword`]); `None` for the
    /// operator's reset. Every token and browser session of the account ends with the old
    /// password (whoever knew it is out); the caller gets a new token with [`Auth::issue`].
    pub async fn change_password(
        &self,
        peer: Option<IpAddr>,
        username: &str,
        current: Option<&str>,
        new: &str,
        actor: &str,
    ) -> Result<User, AuthError> {
        validate_password(new).map_err(AuthError::InvalidPassword)?;
        self.confirm(peer, username, current).await?;
        let hash = self.hash(new).await?;
        let u = self.revoking(
            username,
            actor,
            "user.password",
            "tokens and sessions revoked",
            |u| u.password_hash = hash,
        )?;
        tracing::info!(user = %u.username, %actor, "password changed; the account's tokens and sessions are revoked");
        Ok(u)
    }

    /// Deletes an account, with its SSH keys and sessions; its tokens are refused from then
    /// on (their account is gone). `password`: the owner's confirmation, checked like a
    /// login from `peer`; `None` for the operator. Refused while the account has a hosting.
    pub async fn delete_account(
        &self,
        peer: Option<IpAddr>,
        username: &str,
        password: Option<&str>,
        actor: &str,
    ) -> Result<User, AuthError> {
        let user = self.confirm(peer, username, password).await?;
        let u = self.store.delete_user(user.id, actor)?;
        tracing::info!(user = %u.username, %actor, "account deleted");
        Ok(u)
    }

    /// Enables a disabled account again; tokens from before the disabling stay refused.
    pub fn enable(&self, username: &str, actor: &str) -> Result<User, AuthError> {
        let u = self
            .store
            .modify_user(username, actor, "user.enable", |u| {
                u.disabled_at = None;
                Ok::<_, AuthError>(String::new())
            })
            .map_err(|e| named(e, username))?;
        tracing::info!(user = %u.username, %actor, "account enabled");
        Ok(u)
    }

    /// Periodic housekeeping of the rate limiter's memory.
    pub fn prune(&self) {
        self.limiter.prune();
        self.register_limiter.prune();
        match self.store.sweep_sessions() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "expired browser sessions removed"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep browser sessions"),
        }
    }
}

/// Names the user in a "no such user" error.
fn named(e: AuthError, username: &str) -> AuthError {
    match e {
        AuthError::NoSuchUser(_) => AuthError::NoSuchUser(username.to_owned()),
        e => e,
    }
}

fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && !d.contains('@'))
}

fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let h = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let s = h.to_str().map_err(|_| AuthError::MissingToken)?;
    let (scheme, token) = s.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim())
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Auth>::from_ref(state);
        // A bearer token wins; without one, the dashboard's session cookie (on its host).
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return auth.authenticate(bearer(parts)?);
        }
        match session::from_cookie(&auth, parts)? {
            Some((user, _)) => Ok(user),
            None => Err(AuthError::MissingToken),
        }
    }
}

impl<S> FromRequestParts<S> for AdminUser
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(AuthError::Forbidden);
        }
        Ok(AdminUser(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(valid_email("a@b.co"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("@b.co"));
        assert!(!valid_email("a b@c.de"));
        assert!(!valid_email("a@b@c.de"));
    }

    #[tokio::test]
    async fn hashing_waits_for_a_slot_and_gives_up_busy() {
        let gate = HashGate::new(1, Duration::from_millis(100));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, is_running) = tokio::sync::oneshot::channel();
        let first = {
            let slots = gate.slots.clone();
            let wait = gate.wait;
            tokio::spawn(async move {
                HashGate { slots, wait }
                    .run(move || {
                        let _ = started.send(());
                        held.recv().is_ok()
                    })
                    .await
            })
        };
        is_running.await.expect("first hash started");
        // The only slot is taken: the next one waits 100 ms, then gives up.
        assert!(matches!(gate.run(|| 1).await, Err(AuthError::Busy)));
        release.send(()).expect("release");
        assert!(first.await.expect("join").expect("first ran"));
        assert_eq!(gate.run(|| 2).await.expect("slot free again"), 2);
    }
}
