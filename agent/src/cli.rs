//! What each command does: runs the agent, or one `local` command against a kubeconfig's
//! cluster, printing its report; returns the process exit code.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

use flotilla_proto::telemetry;

use crate::args::{AgentArgs, Args, Command, CommonArgs, LocalCommand, Output};
use crate::error::Error;
use crate::local::{self, ProgressUi};
use crate::metrics::AgentMetrics;
use crate::steps::drain;
use crate::steps::{postflight, rollback, NoProgress, ProgressSink, Step, StepError};
use crate::uplink::{self, TlsIdentity, UplinkConfig, UplinkError};

#[derive(Serialize)]
struct SingleStep<'a> {
    cluster: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<crate::steps::StepOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<local::ErrorReport>,
}

impl Args {
    /// Runs the command (or the agent); returns the process exit code.
    pub async fn run(self) -> Result<ExitCode, Error> {
        let Args {
            log: _,
            log_format: _,
            agent,
            command,
        } = self;
        let Some(command) = command else {
            agent.run().await?;
            return Ok(ExitCode::SUCCESS);
        };
        match command {
            Command::Local(LocalCommand::Migrate(m)) => {
                let (cluster, name) =
                    local::connect(m.common.kubeconfig.as_deref(), m.common.context.as_deref()).await?;
                let json = m.common.output == Output::Json;
                let ui = ProgressUi::new(json);
                // SIGINT/SIGTERM stops the migration (rolled back unless --no-rollback); a second
                // one stops the rollback too.
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(cancel_on_signal(stop.clone()));
                let from = m.from.clone();
                let second = stop.clone();
                tokio::spawn(async move {
                    second.cancelled().await;
                    if tokio::signal::ctrl_c().await.is_ok() {
                        tracing::error!(
                            "interrupted again: stopped; run `flotilla-agent local rollback --from {from}` to finish the rollback"
                        );
                        std::process::exit(130);
                    }
                });
                let report = local::migrate_until(&cluster, &name, &m.options(), &ui, &stop).await;
                ui.finish();
                let mut stdout = std::io::stdout().lock();
                if json {
                    serde_json::to_writer_pretty(&mut stdout, &report).map_err(std::io::Error::other)?;
                    writeln!(stdout)?;
                } else {
                    write!(stdout, "{}", report.render_text())?;
                }
                Ok(ExitCode::from(report.exit_code()))
            }
            Command::Local(LocalCommand::Drain(d)) => {
                let params = drain::Params {
                    concurrency: d.drain_concurrency,
                    node_timeout: d.node_timeout,
                    on_blocked: d.on_blocked,
                    force: d.force,
                    delete_emptydir_data: d.delete_emptydir_data,
                    ..drain::Params::new(&d.from)
                };
                single(Step::Drain(params), &d.common).await
            }
            Command::Local(LocalCommand::Rollback(r)) => {
                let step = Step::Rollback(rollback::Params {
                    group: r.from.clone(),
                    taint_key: r.taint_key.clone(),
                });
                single(step, &r.common).await
            }
            Command::Local(LocalCommand::Inventory(c)) => single(Step::Inventory, &c).await,
            Command::Local(LocalCommand::Postflight(p)) => {
                single(
                    Step::Postflight(postflight::Params {
                        minor: p.minor.clone(),
                    }),
                    &p.common,
                )
                .await
            }
        }
    }
}

impl AgentArgs {
    /// Runs the agent until SIGINT or SIGTERM. Certificates and URL are checked before the
    /// Kubernetes configuration is read. On a signal, running steps stop at their next await
    /// point without a result (they are idempotent and resumable; the coordinator runs the
    /// attempt again once an agent is back) and the session is closed.
    pub async fn run(self) -> Result<(), Error> {
        let AgentArgs {
            coordinator,
            cluster,
            tls_dir,
            kubeconfig,
            heartbeat,
            tls_server_name,
            metrics_listen,
        } = self;
        let required = |field: &'static str| UplinkError::InvalidSetting {
            field,
            message: "required; pass it or set its FLOTILLA_* variable".into(),
        };
        let coordinator = coordinator.ok_or_else(|| required("--coordinator"))?;
        let cluster = cluster.ok_or_else(|| required("--cluster"))?;
        let tls_dir = tls_dir.ok_or_else(|| required("--tls-dir"))?;
        let tls = TlsIdentity::from_dir(&tls_dir, &cluster)?;
        let source = tls_dir.display().to_string();
        tls.check(&cluster, &source)?;
        let kube = kube_client(kubeconfig.as_deref()).await?;
        let metrics = AgentMetrics::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = match metrics_listen {
            Some(addr) => {
                Some(telemetry::serve_metrics(addr, metrics.registry().clone(), shutdown.clone()).await?)
            }
            None => None,
        };
        let config = UplinkConfig {
            heartbeat,
            server_name: tls_server_name,
            tls_source: source,
            metrics,
            ..UplinkConfig::new(coordinator, cluster, tls, kube)
        };
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let result = uplink::run(config, shutdown.clone()).await;
        shutdown.cancel();
        if let Some(server) = server {
            server.stopped().await;
        }
        result?;
        Ok(())
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the agent");
            None
        }
    };
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot watch SIGINT");
                return;
            }
            tracing::info!(signal = "SIGINT", "shutting down");
        }
        _ = terminated => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
    token.cancel();
}

/// The agent's Kubernetes client: `--kubeconfig` if given, else the in-cluster service account,
/// else the usual kubeconfig search. Built with `default_retry = false` (the steps pace and
/// retry their own calls).
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, Error> {
    let mut config = match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
                path: shown.clone(),
                message: format!("{e}; check --kubeconfig names a readable kubeconfig"),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: shown,
                    message: e.to_string(),
                })?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => kube::Config::infer().await.map_err(|e| Error::Kubeconfig {
                path: "default".into(),
                message: format!(
                    "not running in a pod ({in_cluster}) and no kubeconfig found ({e}); pass --kubeconfig FILE"
                ),
            })?,
        },
    };
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

async fn single(step: Step, common: &CommonArgs) -> Result<ExitCode, Error> {
    let json = common.output == Output::Json;
    if let Err(e) = step.validate() {
        return print_single("-", Err(e), json);
    }
    let (cluster, name) = local::connect(common.kubeconfig.as_deref(), common.context.as_deref()).await?;
    let ui = ProgressUi::new(json);
    let sink: &dyn ProgressSink = if json { &NoProgress } else { &ui };
    let result = step.run(&cluster, &name, sink).await;
    ui.finish();
    print_single(&name, result, json)
}

fn print_single(
    name: &str,
    result: Result<crate::steps::StepOutput, StepError>,
    json: bool,
) -> Result<ExitCode, Error> {
    let mut stdout = std::io::stdout().lock();
    let code = match &result {
        Ok(crate::steps::StepOutput::Drain(d)) if !d.skipped.is_empty() => 3,
        Ok(_) => 0,
        Err(StepError::InvalidParameter { .. } | StepError::NodeGroupNotFound { .. }) => 2,
        Err(_) => 1,
    };
    let doc = match result {
        Ok(output) => SingleStep {
            cluster: name,
            ok: true,
            output: Some(output),
            error: None,
        },
        Err(e) => SingleStep {
            cluster: name,
            ok: false,
            output: None,
            error: Some(e.into()),
        },
    };
    if json || doc.ok {
        serde_json::to_writer_pretty(&mut stdout, &doc).map_err(std::io::Error::other)?;
        writeln!(stdout)?;
    } else if let Some(e) = &doc.error {
        writeln!(stdout, "error [{}]: {}", e.code, e.message)?;
    }
    Ok(ExitCode::from(code))
}
