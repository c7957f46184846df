//! `sediment serve` (the daemon) and `sediment run-once` (what is due, then exit), and
//! the settings flags they share with `sediment tables`.

use std::path::PathBuf;

use clap::Args;

use crate::service::settings::parse_listen;
use crate::service::{Service, Settings};

/// Where the settings come from: `--config` (or `SEDIMENT_CONFIG`), the environment,
/// then `--listen` and `--catalog`.
#[derive(Args, Clone)]
pub(crate) struct ServiceArgs {
    /// The settings file (TOML); without one, the embedded default.
    #[arg(long, env = "SEDIMENT_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Listen on this address (overrides the file).
    #[arg(long, value_name = "ADDR", global = true)]
    listen: Option<String>,
    /// The catalog, sqlite://PATH or postgres://... (overrides the file).
    #[arg(long, value_name = "URL", global = true)]
    catalog: Option<String>,
}

impl ServiceArgs {
    /// The settings these flags name, validated.
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let mut settings = Settings::load(self.config.as_deref())?;
        if let Some(listen) = &self.listen {
            settings.listen = parse_listen(listen).map_err(|e| e.context("--listen"))?;
        }
        if let Some(catalog) = &self.catalog {
            settings.catalog = catalog.clone();
        }
        settings.validate()?;
        Ok(settings)
    }

    /// A service over these settings (connected to its catalog).
    pub(crate) async fn service(&self) -> anyhow::Result<Service> {
        Ok(Service::builder(self.settings()?).build().await?)
    }
}

/// The exit code of `run-once` when some job failed.
pub const JOBS_FAILED_EXIT_CODE: u8 = 10;

/// `run-once` ran, and some of its jobs failed.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {ran} jobs failed")]
pub struct JobsFailed {
    pub failed: usize,
    pub ran: usize,
}

/// `sediment serve`.
#[derive(Args, Clone)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// Load and validate the settings (file, environment, flags), print them with the
    /// policies in force per layer, and exit without connecting or listening.
    #[arg(long)]
    check: bool,
}

pub(crate) async fn serve(args: ServeArgs, json: bool) -> anyhow::Result<()> {
    if args.check {
        let settings = args.service.settings()?;
        let policies = settings.layer_policies()?;
        let mut shown = serde_json::to_value(&settings)?;
        shown["catalog"] = sediment_catalog::redact_url(&settings.catalog).into();
        // Literal secrets in storage profiles are not echoed (`${VAR}` references are).
        if let Some(profiles) = shown["storage"].as_object_mut() {
            for options in profiles.values_mut().filter_map(|p| p.as_object_mut()) {
                for (key, value) in options.iter_mut() {
                    let secret = ["secret", "password", "token", "key_id"].iter().any(|s| key.contains(s));
                    if secret && !value.as_str().is_some_and(|v| v.starts_with("${")) {
                        *value = "***".into();
                    }
                }
            }
        }
        let mut in_force = serde_json::Map::new();
        for layer in [sediment_catalog::Layer::Bronze, sediment_catalog::Layer::Silver, sediment_catalog::Layer::Gold] {
            in_force.insert(layer.as_str().into(), serde_json::to_value(policies.get(layer))?);
        }
        shown["policies_in_force"] = in_force.into();
        if json {
            println!("{}", serde_json::to_string_pretty(&shown)?);
        } else {
            println!(
                "settings valid: listen {}, catalog {}, {} workers, {} tokens, {} storage profiles, {} tables",
                settings.listen,
                sediment_catalog::redact_url(&settings.catalog),
                settings.workers.concurrency,
                settings.auth.tokens.len(),
                settings.storage.len(),
                settings.tables.len()
            );
        }
        return Ok(());
    }
    let service = args.service.service().await?;
    let listen = service.settings().listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| crate::Error::new(crate::ErrorKind::Unavailable, format!("cannot listen on {listen}: {e}")))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    eprintln!(
        "sediment serve: {} listening on http://{}, catalog {}, {} workers",
        service.daemon_id(),
        listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string()),
        sediment_catalog::redact_url(&service.settings().catalog),
        service.settings().workers.concurrency
    );
    service.serve(listener, shutdown).await?;
    eprintln!("sediment serve: stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn run_once(args: ServiceArgs, json: bool) -> anyhow::Result<()> {
    let service = args.service().await?;
    let report = service.run_once().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("scheduled {} jobs; ran {}", report.enqueued, report.jobs.len());
        for job in &report.jobs {
            println!(
                "  job {:>6}  {:<10} {:<28} {:<10} {:>7} ms  {}",
                job.id,
                job.kind,
                job.table,
                job.outcome,
                job.duration_ms,
                job.error.as_deref().unwrap_or("")
            );
        }
    }
    let failed = report.jobs.iter().filter(|j| j.outcome == "failed").count();
    if failed > 0 {
        return Err(JobsFailed { failed, ran: report.jobs.len() }.into());
    }
    Ok(())
}
