//! Starting and stopping the service: the data directory, the root key, the event log, the
//! projections, the router, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use eventlog::{EventLog, RocksLog};
use projections::{Backend, Options, Projections, ReadModels};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::mail::Mailer;
use crate::routes;

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub log: Arc<RocksLog>,
    pub projections: Projections<RocksLog>,
    /// The operator's root key (two during a rotation): it wraps the tenants' data keys and
    /// keys one-time onboarding codes (see `CodeKey`).
    pub root_keys: crate::root_key::RootKeys,
    pub mailer: Mailer,
    pub limits: crate::limits::Limits,
    /// Whole-stream walks running at once (audit verify and state): half the CPUs, so that
    /// auditors of many tenants at once cannot take the service's every CPU.
    pub audit_walks: tokio::sync::Semaphore,
    /// QR challenges and SSO hand-offs in flight.
    pub challenges: crate::challenges::Store,
    /// Commands on one tenant take turns.
    pub tenant_locks: crate::command::TenantLocks,
    /// Folded states of recently commanded tenants.
    pub histories: crate::command::HistoryCache,
    /// Password hashes (argon2id): one thread per CPU, at a lower priority.
    pub hashing: crate::hashing::HashingPool,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Snapshots of folded states being written off the tenants' turns.
    pub snapshot_writes: crate::snapshots::Writes,
    /// Wakes agents waiting on their tenant's change feed.
    pub feed: Arc<crate::feed::Feed>,
    /// Host rows and agent credentials, as the read models last had them.
    pub cache: Arc<crate::cache::Cache>,
    /// Turns true when the service begins to stop: long-polls answer at once.
    pub stopping: watch::Receiver<bool>,
    /// Set once the reason the log stopped taking writes has been logged.
    pub log_failure_logged: std::sync::atomic::AtomicBool,
    /// The copy of the key store that restores need, if configured.
    pub key_mirror: Option<crate::key_mirror::KeyMirror>,
    /// The last backup and root key rotation, for `/metrics`.
    pub operator_log: crate::operator_log::Follower,
    /// The HTTP connections served at once, and their limit.
    pub connections: crate::serve::Connections,
}

impl AppState {
    /// Brings the key mirror up to date, after a deletion took tenants' keys out of the key
    /// store: they must leave the mirror too. A failure is logged and reported by readiness;
    /// the mirror is tried again every [`KEY_MIRROR_RETRY`] until it is current.
    pub async fn refresh_key_mirror(&self) {
        if let Some(mirror) = &self.key_mirror
            && let Err(e) = mirror.refresh(&self.log).await
        {
            tracing::error!(error = %e, "the key mirror may still hold a deleted tenant's key; it is tried again until it is current");
        }
    }

    /// Resolves when the service begins to stop.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|s| *s).await;
    }
}

impl AppState {
    pub fn read(&self) -> &ReadModels {
        self.projections.read_models()
    }
}

pub type Shared = Arc<AppState>;

/// How often a key mirror whose refresh failed is tried again.
pub const KEY_MIRROR_RETRY: Duration = Duration::from_secs(30);

/// Connections the metrics listener serves at once (and from one address).
const METRICS_CONNECTIONS: usize = 16;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("{0}")]
    RootKey(#[from] crate::root_key::RootKeyError),
    #[error("event log: {0}")]
    Log(#[from] eventlog::Error),
    #[error("read models: {0}")]
    Projections(#[from] projections::Error),
    #[error("IDEM_SMTP_URL: {0}")]
    Mail(String),
    #[error("listening on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("control socket {0}: {1}")]
    Control(String, std::io::Error),
    #[error("starting the password-hashing threads: {0}")]
    Hashing(std::io::Error),
    #[error(
        "the event log in {0} is a backup whose {1} tenant keys were not put back: restore it \
         with `idemd restore` into an empty data directory"
    )]
    UnrestoredBackup(String, usize),
    #[error("{0}")]
    KeyMirror(#[from] crate::key_mirror::MirrorError),
    #[error("{0}")]
    Redelete(#[from] crate::redelete::RedeleteError),
}

/// A running service.
pub struct Server {
    pub addr: SocketAddr,
    /// The metrics listener's address, with `IDEM_METRICS_BIND`.
    pub metrics_addr: Option<SocketAddr>,
    feed: Arc<crate::feed::Feed>,
    snapshot_writes: crate::snapshots::Writes,
    /// Not an owner: the log closes when the service stops.
    log: std::sync::Weak<RocksLog>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens everything and starts serving; answers once the listener is bound.
    pub async fn start(mut config: Config) -> Result<Server, StartError> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data)
            .map_err(|e| StartError::DataDir(data.display().to_string(), e))?;
        let log = Arc::new(RocksLog::open(data.join("log"))?);
        tracing::info!(log_id = %log.log_id(), head = log.head_position(), "event log open");
        if let Some(left_out) = log.keys_left_out().await? {
            return Err(StartError::UnrestoredBackup(
                data.join("log").display().to_string(),
                left_out.len(),
            ));
        }
        let root_keys = crate::root_key::load(&config.root_key_file, &log).await?;
        let (key_mirror, undeleted) = match &config.key_mirror {
            Some(path) => {
                let mirror = crate::key_mirror::KeyMirror::new(path.clone());
                let refreshed = mirror.refresh(&log).await?;
                tracing::info!(
                    path = %path.display(),
                    keys = refreshed.keys,
                    deleted = refreshed.deleted,
                    "key mirror up to date"
                );
                (Some(mirror), refreshed.undeleted)
            }
            None => (None, Vec::new()),
        };
        let backend =
            Backend::from_config(&data.join("readmodels"), config.database_url.as_deref())?;
        let mailer = match &config.smtp_url {
            Some(url) => Mailer::smtp(url, config.mail_from.clone())
                .map_err(|e| StartError::Mail(e.to_string()))?,
            None => Mailer::development(data.join("mail"), config.mail_from.clone())
                .map_err(|e| StartError::DataDir(data.join("mail").display().to_string(), e))?,
        };
        mailer.announce();
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| StartError::Bind(config.bind, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(config.bind, e))?;
        // With port 0 the system picked one: the URLs handed out must name it.
        config.bind = addr;
        let (metrics_listener, metrics_addr) = match config.metrics_bind {
            Some(bind) => {
                let bound = TcpListener::bind(bind).await;
                let listener = bound.map_err(|e| StartError::Bind(bind, e))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| StartError::Bind(bind, e))?;
                (Some(listener), Some(local))
            }
            None => (None, None),
        };
        let control_path = crate::control::socket_path(&config);
        let control_listener = crate::control::bind(&control_path)?;
        let (stop, stopped) = watch::channel(false);
        let descriptors = crate::serve::descriptor_limit();
        let connections = crate::serve::Connections::new(
            crate::serve::connection_limit(config.max_connections, descriptors),
            crate::per_address::PerAddress::new(
                config.max_connections_per_address,
                config.trusted_proxies.clone(),
            ),
        );
        if u64::try_from(connections.limit()).map_or(true, |n| n.saturating_add(256) > descriptors)
        {
            tracing::warn!(
                max_connections = connections.limit(),
                descriptors,
                "IDEM_MAX_CONNECTIONS leaves fewer than 256 file descriptors to the log and the \
                 read models: accepting or opening files may fail"
            );
        }
        tracing::info!(
            max_connections = connections.limit(),
            max_connections_per_address = connections.per_address().cap(),
            descriptors,
            "HTTP connection limits"
        );
        let login_rate = config.agent_login_rate;
        let history_cache_bytes = config.history_cache_bytes;
        let hashing = crate::hashing::HashingPool::start(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )
        .map_err(StartError::Hashing)?;
        // Started last: once running, the projectors hold the log until shut down.
        let projections = Projections::start(log.clone(), backend, Options::default()).await?;
        let state = Arc::new(AppState {
            stopping: stop.subscribe(),
            config,
            log,
            projections,
            root_keys,
            mailer,
            limits: crate::limits::Limits::new(login_rate),
            audit_walks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            ),
            challenges: crate::challenges::Store::default(),
            tenant_locks: crate::command::TenantLocks::default(),
            histories: crate::command::HistoryCache::with_budget(history_cache_bytes),
            metrics: Arc::default(),
            snapshot_writes: crate::snapshots::Writes::default(),
            feed: Arc::new(crate::feed::Feed::default()),
            cache: Arc::new(crate::cache::Cache::default()),
            hashing,
            log_failure_logged: Default::default(),
            key_mirror,
            operator_log: Default::default(),
            connections,
        });
        // Before anyone is served: a tenant deleted after the restored backup was taken must
        // not be seen again.
        if let Err(e) = crate::redelete::delete_again(&state, &undeleted).await {
            // Close the log before answering, so that the data directory can be opened again.
            state.snapshot_writes.idle().await;
            if let Ok(state) = Arc::try_unwrap(state) {
                state.projections.shutdown().await;
            }
            return Err(e.into());
        }
        let app = router(state.clone());
        let control = tokio::spawn(serve_control(
            control_listener,
            control_path,
            crate::control::router(state.clone()),
            stop.subscribe(),
        ));
        let mirror_state = state.clone();
        let mirror_stopping = stop.subscribe();
        let key_mirror = tokio::spawn(async move {
            if let Some(mirror) = &mirror_state.key_mirror {
                mirror
                    .keep_current(&mirror_state.log, KEY_MIRROR_RETRY, mirror_stopping)
                    .await;
            }
        });
        let feed_handle = state.feed.clone();
        let snapshot_writes = state.snapshot_writes.clone();
        let log_handle = Arc::downgrade(&state.log);
        let feed = tokio::spawn(state.feed.clone().run(
            state.log.clone(),
            state.projections.progress(),
            state.cache.clone(),
            stop.subscribe(),
        ));
        let header_read_timeout = state.config.header_read_timeout;
        let connections = state.connections.clone();
        let metrics_serve = metrics_listener.map(|listener| {
            // A scraper or two: a few places, none of them taken from the API's.
            let connections = crate::serve::Connections::new(
                METRICS_CONNECTIONS,
                crate::per_address::PerAddress::new(
                    METRICS_CONNECTIONS,
                    crate::client_addr::TrustedProxies::default(),
                ),
            );
            tokio::spawn(crate::serve::serve(
                listener,
                metrics_router(state.clone()),
                header_read_timeout,
                connections,
                stop.subscribe(),
            ))
        });
        let task = tokio::spawn(async move {
            crate::serve::serve(listener, app, header_read_timeout, connections, stopped).await;
            if let Some(metrics_serve) = metrics_serve {
                let _ = metrics_serve.await;
            }
            // The feed's and the control socket's tasks hold the log too: they end on the
            // same signal.
            let _ = feed.await;
            let _ = control.await;
            let _ = key_mirror.await;
            // Snapshot writes hold the log as well; none starts once every request is done.
            state.snapshot_writes.idle().await;
            // Every request has finished, but the connection tasks may still be dropping their
            // handles on the state: wait for them (briefly), so that the projections stop and
            // the log closes before `shutdown` returns, and the data directory can be reopened.
            let mut state = state;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match Arc::try_unwrap(state) {
                    Ok(state) => {
                        state.projections.shutdown().await;
                        break;
                    }
                    Err(shared) if std::time::Instant::now() < deadline => {
                        state = shared;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(_) => {
                        tracing::warn!(
                            "state still shared 10 s after shutdown; the log stays open"
                        );
                        break;
                    }
                }
            }
        });
        tracing::info!(%addr, "idemd listening");
        if let Some(metrics_addr) = metrics_addr {
            tracing::info!(%metrics_addr, "metrics listening");
        }
        Ok(Server {
            addr,
            metrics_addr,
            feed: feed_handle,
            snapshot_writes,
            log: log_handle,
            stop,
            task,
        })
    }

    /// The running service's event log (`None` once the service has stopped and closed it).
    pub fn log(&self) -> Option<Arc<RocksLog>> {
        self.log.upgrade()
    }

    /// How many change-feed long-polls are waiting now.
    pub fn waiting_long_polls(&self) -> usize {
        self.feed.waiting()
    }

    /// Resolves once no snapshot of a tenant's state is being written (they are written in
    /// tasks of their own, after the command that found one due has answered).
    pub async fn snapshot_writes_done(&self) {
        self.snapshot_writes.idle().await;
    }

    /// Stops accepting, lets in-flight requests finish, then stops the projectors.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Serves the operator's control socket until the service stops, then removes its file.
async fn serve_control(
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<crate::control::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    {
        tracing::error!(error = %e, "control socket failed");
    }
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(error = %e, path = %path.display(), "control socket file not removed");
    }
}

/// The largest request body any JSON route takes.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The largest body of the unauthenticated routes (signup, onboarding, login): a few short
/// fields, so anything bigger is refused before it is read.
pub const PUBLIC_BODY_LIMIT: usize = 4 * 1024;

/// The API's routes with their body limits: what the portals call in process, too.
pub fn api_routes() -> Router<Shared> {
    routes::table::public::router()
        .layer(DefaultBodyLimit::max(PUBLIC_BODY_LIMIT))
        .merge(routes::table::session::router().layer(DefaultBodyLimit::max(BODY_LIMIT)))
        .merge(
            routes::table::uploads::router()
                .layer(DefaultBodyLimit::max(routes::branding::UPLOAD_LIMIT)),
        )
        .layer(middleware::map_response(crate::problem::from_plain_refusal))
}

/// Every route: the API, and the portals' pages.
pub fn router(state: Shared) -> Router {
    api_routes()
        .merge(crate::portal::router(&state.config))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), min_position))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::body_deadline::body_deadline,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// The metrics listener's routes (`IDEM_METRICS_BIND`): `/metrics`, and `/healthz` and
/// `/readyz` for whoever watches it; nothing of the API.
pub fn metrics_router(state: Shared) -> Router {
    use axum::routing::get;
    Router::new()
        .route("/metrics", get(routes::health::metrics))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::Extension(routes::health::OnMetricsListener))
        .with_state(state)
}

/// Honours `Idem-Min-Position: N`: the request is handled once the read models have reached
/// position N, or after a few seconds (then it reads what is there). A value that is not a
/// position is a 400.
async fn min_position(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(value) = request.headers().get("idem-min-position") {
        let Some(position) = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return crate::problem::Problem::bad_request(
                "Idem-Min-Position must be a log position (a whole number)",
            )
            .into_response();
        };
        state.projections.wait_for(position, READ_YOUR_WRITES).await;
    }
    next.run(request).await
}

/// Headers every answer carries. API answers hold tokens and tenant data: no cache may keep
/// one (`no-store`, as OAuth requires of token answers) unless the route says otherwise (the
/// branding images do). Behind https, browsers are told to stay on https.
fn guard_response(config: &crate::config::Config, api: bool, response: &mut Response) {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    if api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if config.public_scheme == "https" {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Gives each request an id (or keeps the caller's `X-Request-Id`), logs it with the outcome,
/// and answers with it, with the headers of [`guard_response`].
async fn request_id(State(state): State<Shared>, request: Request, next: Next) -> Response {
    // Read from the request, not extracted: a `HeaderMap` extractor clones every header, on
    // every request (a long-poll fan-out makes thousands of them at once).
    // A caller's id is copied, not cloned: a clone would share the connection's read buffer.
    let given = request
        .headers()
        .get("x-request-id")
        .map(|v| v.as_bytes())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic))
        .and_then(|v| axum::http::HeaderValue::from_bytes(v).ok());
    let id = given.or_else(|| {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
        axum::http::HeaderValue::from_str(text).ok()
    });
    let method = request.method().clone();
    let api = request.uri().path().starts_with("/api/");
    // Copied only if it is logged: a clone of the URI would hold on to the connection's read
    // buffer for as long as the request runs (a long-poll: a minute).
    let path = tracing::enabled!(tracing::Level::INFO).then(|| request.uri().path().to_owned());
    // The route's pattern, not the path: ids and names stay out of the metrics' labels.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let route = route.as_ref().map_or("unmatched", |m| m.as_str());
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .request(route, method.as_str(), status, started.elapsed());
    if status == 429 {
        state
            .metrics
            .count(crate::metrics::Counter::RateLimited, route);
    }
    let shown = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info!(request_id = %shown, %method, path = %path.as_deref().unwrap_or(""), status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    if let Some(id) = id {
        response.headers_mut().insert("x-request-id", id);
    }
    guard_response(&state.config, api, &mut response);
    response
}

/// How long a read waits for the projections to reach a write it must see.
pub const READ_YOUR_WRITES: Duration = Duration::from_secs(5);
