//! The service: the `sediment serve` daemon and `sediment run-once`.
//!
//! ```text
//! settings ─▶ Service ─┬─ scheduler: every tick, each catalog table ─▶ triggers (pure) ─▶ jobs enqueued
//!                      ├─ workers: claim (lease) ─▶ execute (library calls) ─▶ finish (fenced on the lease)
//!                      │            └─ heartbeat: renew the lease, notice a cancel or a lost lease
//!                      └─ HTTP API (api/): the same library calls, behind bearer tokens; /metrics
//! ```
//!
//! Words: a *trigger* is a reason a table needs a job (a schedule came round, a
//! partition has too many small files); a *job* is a row in the catalog with a lease;
//! an *attempt* is one worker's run of it. Every daemon may schedule and work: the
//! catalog keeps at most one active job per table and kind, and a job is claimed by
//! one daemon at a time, so several daemons on one PostgreSQL catalog split the work
//! with no coordinator. A daemon that dies mid-job stops heartbeating; its lease
//! expires and another daemon takes the job over; the dead one's uncommitted output
//! files are orphans that vacuum removes, and Delta's own conflict checks stay the
//! last line of defence.
//!
//! | module | what it holds |
//! |---|---|
//! | [`settings`] | the TOML settings, environment overrides, validation |
//! | [`triggers`] | which jobs a table needs now (pure) |
//! | [`scheduler`] | the tick: tables opened, triggers evaluated, jobs enqueued |
//! | [`worker`] | claim, heartbeat, execute, finish; graceful shutdown |
//! | [`execute`] | one job kind → one library call and its report |
//! | [`ops`] | catalog operations the CLI and the API share (register, describe, discover, tags, restore) |
//! | [`pipelines`] | pipeline operations the CLI and the API share (list, run, backfill, status, lineage, checks) |
//! | [`api`] | the HTTP API (thin handlers over `ops`), auth, OpenAPI document |
//! | [`metrics`] | Prometheus metric names and the recorder |

pub mod api;
pub mod execute;
pub mod metrics;
pub mod ops;
pub mod pipelines;
pub mod scheduler;
pub mod settings;
pub mod triggers;
pub mod worker;

use std::sync::Arc;

use sediment_catalog::{Catalog, LayerPolicies, SqlCatalog};
use tokio_util::sync::CancellationToken;

pub use settings::Settings;
pub use worker::RunOnceReport;

use crate::error::{Error, ErrorKind, Result};
use crate::table::clock::{self, Clock};

/// A daemon's parts, shared by its scheduler, workers and API.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub settings: Settings,
    pub catalog: Arc<dyn Catalog>,
    pub policies: LayerPolicies,
    pub clock: Arc<dyn Clock>,
    pub daemon_id: String,
    pub stores: Option<StoreResolver>,
    /// The latest handle of each table the daemon opened, shared by the scheduler and
    /// the workers (see [`ops::latest_table`]).
    pub tables: std::sync::Mutex<std::collections::HashMap<String, (String, crate::Table)>>,
}

/// An object store for a table location (given as registered), used instead of the
/// one its URI and storage profile would build: a Rust program embedding the service
/// can put its own or an instrumented store under some tables. `None`: the usual store.
pub type StoreResolver = Arc<dyn Fn(&str) -> Option<Arc<dyn deltalake::ObjectStore>> + Send + Sync>;

/// Builds a [`Service`] from settings, with components injected for tests.
pub struct ServiceBuilder {
    settings: Settings,
    catalog: Option<Arc<dyn Catalog>>,
    clock: Arc<dyn Clock>,
    stores: Option<StoreResolver>,
}

impl ServiceBuilder {
    /// Open the tables whose location `resolver` knows on the store it returns.
    pub fn with_stores(mut self, resolver: StoreResolver) -> Self {
        self.stores = Some(resolver);
        self
    }

    /// Use this catalog instead of connecting to `settings.catalog`.
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Read "now" from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Connect to the catalog (migrating it).
    pub async fn build(self) -> Result<Service> {
        self.settings.validate()?;
        install_crypto_provider();
        let catalog = match self.catalog {
            Some(catalog) => catalog,
            None => Arc::new(SqlCatalog::connect(&self.settings.catalog).await.map_err(Error::from)?),
        };
        let policies = self.settings.layer_policies()?;
        let daemon_id = self.settings.daemon_id();
        Ok(Service {
            inner: Arc::new(Inner {
                settings: self.settings,
                catalog,
                policies,
                clock: self.clock,
                daemon_id,
                stores: self.stores,
                tables: Default::default(),
            }),
        })
    }
}

impl Service {
    /// Register the settings' `[[tables]]` that the catalog does not hold yet
    /// (`scheduler.parallelism` at a time: each is opened to check it). A table
    /// that cannot be registered (its location unreachable) is logged and skipped, so
    /// one bad entry does not stop the daemon; a catalog error stops it. The declared
    /// CHECK constraints of every configured table that exists are added where
    /// missing; one the table's rows break, or one it has under another condition,
    /// stops the daemon naming both.
    pub async fn register_configured_tables(&self) -> Result<()> {
        use futures::StreamExt;
        let configured = self.inner.settings.tables.clone();
        let results: Vec<Result<()>> = futures::stream::iter(configured)
            .map(|table| async move {
                match self.inner.catalog.table(&table.name).await {
                    Ok(entry) if !table.constraints.is_empty() => {
                        let mut opened = ops::open_table(self, &entry).await?;
                        ops::ensure_constraints(&mut opened, &table.name, &table.constraints).await
                    }
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == sediment_catalog::CatalogErrorKind::NotFound => {
                        let name = table.name.clone();
                        match ops::register_table(self, table).await {
                            Ok(_) => Ok(()),
                            // The declaration and the table's rows disagree: a bad config.
                            Err(e) if e.message().contains("declared constraint") => Err(e),
                            Err(e) => {
                                tracing::error!(table = %name, error = %e, "cannot register the table from the settings");
                                Ok(())
                            }
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .buffer_unordered(self.inner.settings.scheduler.parallelism.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }
}

impl Service {
    /// A builder over `settings`.
    pub fn builder(settings: Settings) -> ServiceBuilder {
        ServiceBuilder { settings, catalog: None, clock: clock::system(), stores: None }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Its catalog.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.inner.catalog
    }

    /// Its name in leases.
    pub fn daemon_id(&self) -> &str {
        &self.inner.daemon_id
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Run the daemon until `shutdown` is cancelled: the API on `listener`, the
    /// scheduler and the workers. On shutdown it stops claiming, gives running jobs
    /// `workers.shutdown_grace` to finish, gives back the rest, then returns.
    pub async fn serve(&self, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> Result<()> {
        self.register_configured_tables().await?;
        pipelines::check(self).await?;
        let metrics = metrics::install();
        let app = api::router(self.clone(), metrics);
        let api_shutdown = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { api_shutdown.cancelled().await }).await
        });
        let scheduler = if self.inner.settings.scheduler.enabled {
            Some(tokio::spawn(scheduler::run(self.clone(), shutdown.clone())))
        } else {
            None
        };
        let workers = worker::spawn_pool(self.clone(), shutdown.clone(), false);
        let housekeeping = tokio::spawn(worker::housekeeping(self.clone(), shutdown.clone()));
        shutdown.cancelled().await;
        tracing::info!(daemon = %self.inner.daemon_id, "shutting down: no new claims; running jobs get the grace period");
        for worker in workers {
            let _ = worker.await;
        }
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
        let _ = housekeeping.await;
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::new(ErrorKind::Unavailable, format!("the HTTP server failed: {e}"))),
            Err(e) => Err(Error::internal(format!("the HTTP server task failed: {e}"))),
        }
    }

    /// Schedule what is due now (no jitter), run every due job with the worker pool,
    /// and return once no due job is left.
    pub async fn run_once(&self) -> Result<RunOnceReport> {
        self.register_configured_tables().await?;
        pipelines::check(self).await?;
        metrics::install();
        let enqueued = scheduler::tick(self, &mut scheduler::TableCache::default(), false).await?;
        let mut report = worker::run_until_idle(self.clone()).await;
        report.enqueued = enqueued;
        Ok(report)
    }
}

/// The tree's rustls has both the ring and aws-lc-rs providers; pick ring once, before
/// any TLS client (the PostgreSQL driver, S3) starts.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl From<sediment_catalog::CatalogError> for Error {
    fn from(err: sediment_catalog::CatalogError) -> Self {
        use sediment_catalog::CatalogErrorKind as K;
        let kind = match err.kind() {
            K::InvalidInput => ErrorKind::InvalidInput,
            K::NotFound => ErrorKind::NotFound,
            K::Conflict => ErrorKind::Conflict,
            K::Unavailable => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, err.to_string())
    }
}
