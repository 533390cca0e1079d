//! What each `flotilla` subcommand calls on the Fleet API and prints. Input files are read and
//! checked before connecting, so a bad template costs no call.

use std::io::Write;

use flotilla_proto::fleet::v1 as pb;
use jiff::Timestamp;

use super::args::{
    Cli, ClustersCommand, Command, DrainArgs, MigrateArgs, OperationsCommand, RolloutCommand, UpgradeArgs,
};
use super::connect::{Client, Target};
use super::error::CliError;
use super::render::{self, Format, OperationView, RolloutView};
use super::spec::{self, MigrationOptions};
use super::{watch, Io, Outcome};

/// Runs one command line.
pub async fn run(cli: Cli, io: &mut Io) -> Result<Outcome, CliError> {
    let Cli {
        coordinator,
        tls_dir,
        identity,
        output,
        command,
    } = cli;
    let target = Target {
        coordinator,
        tls_dir,
        identity,
    };
    match command {
        Command::Clusters(cmd) => clusters(cmd, &target, io, output).await,
        Command::Migrate(args) => migrate(args, &target, io, output).await,
        Command::Upgrade(args) => upgrade(args, &target, io, output).await,
        Command::Operations(cmd) => operations(cmd, &target, io, output).await,
        Command::Rollout(cmd) => rollout(cmd, &target, io, output).await,
    }
}

fn print(io: &mut Io, text: &str) -> Result<(), CliError> {
    io.out.write_all(text.as_bytes())?;
    io.out.flush()?;
    Ok(())
}

// === clusters ===

async fn clusters(
    cmd: ClustersCommand,
    target: &Target,
    io: &mut Io,
    format: Format,
) -> Result<Outcome, CliError> {
    let mut client = target.connect().await?;
    let now = Timestamp::now();
    match cmd {
        ClustersCommand::List { selector } => {
            // Every page, in id order.
            let mut clusters = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .fleet
                    .list_clusters(pb::ListClustersRequest {
                        label_selector: selector.clone().unwrap_or_default(),
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(|s| client.status(s))?
                    .into_inner();
                clusters.extend(page.clusters);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let view = render::ClusterList {
                clusters: clusters.iter().map(Into::into).collect(),
            };
            print(
                io,
                &render::render(format, &view, || render::clusters_table(&clusters, now)),
            )?;
        }
        ClustersCommand::Get { name } => {
            let cluster = client
                .fleet
                .get_cluster(pb::GetClusterRequest { cluster_id: name })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let view = render::ClusterView::from(&cluster);
            print(
                io,
                &render::render(format, &view, || render::cluster_detail(&cluster, now)),
            )?;
        }
    }
    Ok(Outcome::Done)
}

// === migrate / upgrade ===

fn migration_options(
    from: Option<String>,
    template: pb::NodegroupTemplate,
    drain: DrainArgs,
) -> MigrationOptions {
    let DrainArgs {
        surge,
        on_blocked,
        force,
        delete_emptydir_data,
        drain_concurrency,
        node_timeout,
        ready_timeout,
        taint_key,
        delete_nodegroup_on_rollback,
    } = drain;
    MigrationOptions {
        from_nodegroup: from.unwrap_or_default(),
        template,
        surge,
        on_blocked,
        force,
        delete_emptydir_data,
        drain_concurrency,
        node_timeout,
        ready_timeout,
        taint_key,
        delete_nodegroup_on_rollback,
    }
}

async fn migrate(
    args: MigrateArgs,
    target: &Target,
    io: &mut Io,
    format: Format,
) -> Result<Outcome, CliError> {
    let MigrateArgs {
        cluster,
        from,
        nodegroup_template,
        drain,
        wait,
        dry_run,
    } = args;
    let template = spec::load_template(&nodegroup_template)?;
    let params = migration_options(from, template, drain).to_proto();
    let work = pb::Work {
        kind: Some(pb::work::Kind::Migration(params)),
    };
    start(target, io, format, cluster, work, wait, dry_run).await
}

async fn upgrade(
    args: UpgradeArgs,
    target: &Target,
    io: &mut Io,
    format: Format,
) -> Result<Outcome, CliError> {
    let UpgradeArgs {
        cluster,
        to,
        force,
        wait,
        dry_run,
    } = args;
    let work = pb::Work {
        kind: Some(pb::work::Kind::Upgrade(pb::UpgradeParams {
            target_version: to,
            force,
            migrate_self_managed: false,
            migration: None,
        })),
    };
    start(target, io, format, cluster, work, wait, dry_run).await
}

/// StartOperation, then print it, or follow it with `wait`.
async fn start(
    target: &Target,
    io: &mut Io,
    format: Format,
    cluster: String,
    work: pb::Work,
    wait: bool,
    dry_run: bool,
) -> Result<Outcome, CliError> {
    let mut client = target.connect().await?;
    let op = client
        .fleet
        .start_operation(pb::StartOperationRequest {
            cluster_id: cluster,
            work: Some(work),
            dry_run,
        })
        .await
        .map_err(|s| client.status(s))?
        .into_inner();
    let now = Timestamp::now();
    if dry_run {
        let view = OperationView::new(&op, now);
        print(
            io,
            &render::render(format, &view, || {
                format!(
                    "Dry run: nothing was changed.\n{}",
                    render::operation_detail(&op, now)
                )
            }),
        )?;
        return Ok(Outcome::Done);
    }
    if wait {
        if format == Format::Table {
            writeln!(
                io.out,
                "Started operation {} on {}: {}",
                op.id,
                op.cluster_id,
                render::work_summary(op.work.as_ref())
            )?;
        }
        return watch::watch_operation(&mut client, &op.id, io, format).await;
    }
    let view = OperationView::new(&op, now);
    print(
        io,
        &render::render(format, &view, || {
            format!(
                "Started operation {} on {}: {}\nFollow it with: flotilla operations watch {}\n",
                op.id,
                op.cluster_id,
                render::work_summary(op.work.as_ref()),
                op.id
            )
        }),
    )?;
    Ok(Outcome::Done)
}

// === operations ===

async fn operations(
    cmd: OperationsCommand,
    target: &Target,
    io: &mut Io,
    format: Format,
) -> Result<Outcome, CliError> {
    let mut client = target.connect().await?;
    let now = Timestamp::now();
    match cmd {
        OperationsCommand::Get { id } => {
            let op = get_operation(&mut client, &id).await?;
            let view = OperationView::new(&op, now);
            print(
                io,
                &render::render(format, &view, || render::operation_detail(&op, now)),
            )?;
        }
        OperationsCommand::List {
            cluster,
            rollout,
            limit,
            page_token,
        } => {
            let list = client
                .fleet
                .list_operations(pb::ListOperationsRequest {
                    cluster_id: cluster.unwrap_or_default(),
                    rollout_id: rollout.unwrap_or_default(),
                    page_size: limit.unwrap_or(0),
                    page_token: page_token.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let view = render::OperationList {
                operations: list
                    .operations
                    .iter()
                    .map(|o| OperationView::new(o, now))
                    .collect(),
                next_page_token: list.next_page_token.clone(),
            };
            print(
                io,
                &render::render(format, &view, || render::operations_table(&list.operations, now)),
            )?;
            if format == Format::Table && !list.next_page_token.is_empty() {
                writeln!(io.err, "more: add --page-token {}", list.next_page_token)?;
            }
        }
        OperationsCommand::Watch { id } => return watch::watch_operation(&mut client, &id, io, format).await,
        OperationsCommand::Cancel { id, reason } => {
            let op = client
                .fleet
                .cancel_operation(pb::CancelOperationRequest {
                    operation_id: id,
                    reason: reason.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let view = OperationView::new(&op, now);
            print(
                io,
                &render::render(format, &view, || {
                    let mut text = format!(
                        "Cancelling operation {} on {}: now {}\n",
                        op.id,
                        op.cluster_id,
                        render::operation_state(op.state)
                    );
                    if let Some(pb::work::Kind::Migration(m)) = op.work.as_ref().and_then(|w| w.kind.as_ref())
                    {
                        let group = m.nodegroup.as_ref().map_or("", |t| t.nodegroup_name.as_str());
                        if m.delete_nodegroup_on_rollback {
                            text.push_str(&format!(
                                "A rollback also deletes the new managed group {group}.\n"
                            ));
                        } else {
                            text.push_str(&format!(
                                "A rollback keeps the new managed group {group} (it was started without \
                                 --delete-nodegroup-on-rollback).\n"
                            ));
                        }
                    }
                    text.push_str(&format!("Follow it with: flotilla operations watch {}\n", op.id));
                    text
                }),
            )?;
        }
    }
    Ok(Outcome::Done)
}

async fn get_operation(client: &mut Client, id: &str) -> Result<pb::Operation, CliError> {
    client
        .fleet
        .get_operation(pb::GetOperationRequest {
            operation_id: id.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| client.status(s))
}

// === rollouts ===

async fn get_rollout(client: &mut Client, id: &str) -> Result<pb::Rollout, CliError> {
    client
        .fleet
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: id.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| client.status(s))
}

fn print_rollout(io: &mut Io, format: Format, r: &pb::Rollout, headline: &str) -> Result<(), CliError> {
    let now = Timestamp::now();
    let view = RolloutView::from(r);
    print(
        io,
        &render::render(format, &view, || {
            format!("{headline}\n\n{}", render::rollout_detail(r, now))
        }),
    )
}

async fn rollout(
    cmd: RolloutCommand,
    target: &Target,
    io: &mut Io,
    format: Format,
) -> Result<Outcome, CliError> {
    // The spec is checked before connecting.
    let plan = match &cmd {
        RolloutCommand::Create { file, .. } => Some(spec::load_rollout(file)?),
        _ => None,
    };
    let mut client = target.connect().await?;
    let now = Timestamp::now();
    match cmd {
        RolloutCommand::Create { paused, wait, .. } => {
            let plan = plan.expect("loaded above");
            let mut request = plan.request;
            request.start_paused |= paused;
            let r = client
                .fleet
                .create_rollout(request)
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            if wait {
                if format == Format::Table {
                    writeln!(io.out, "Created rollout {} ({})", r.id, r.name)?;
                }
                return watch::watch_rollout(&mut client, &r.id, io, format).await;
            }
            let headline = format!(
                "Created rollout {} ({}). Follow it with: flotilla rollout watch {}",
                r.id, r.name, r.id
            );
            print_rollout(io, format, &r, &headline)?;
        }
        RolloutCommand::Get { id } => {
            let r = get_rollout(&mut client, &id).await?;
            let view = RolloutView::from(&r);
            print(
                io,
                &render::render(format, &view, || render::rollout_detail(&r, now)),
            )?;
        }
        RolloutCommand::List {
            state,
            limit,
            page_token,
        } => {
            let list = client
                .fleet
                .list_rollouts(pb::ListRolloutsRequest {
                    states: state.iter().map(|s| s.to_proto() as i32).collect(),
                    page_size: limit.unwrap_or(0),
                    page_token: page_token.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let view = render::RolloutList {
                rollouts: list.rollouts.iter().map(Into::into).collect(),
                next_page_token: list.next_page_token.clone(),
            };
            print(
                io,
                &render::render(format, &view, || render::rollouts_table(&list.rollouts, now)),
            )?;
            if format == Format::Table && !list.next_page_token.is_empty() {
                writeln!(io.err, "more: add --page-token {}", list.next_page_token)?;
            }
        }
        RolloutCommand::Watch { id } => return watch::watch_rollout(&mut client, &id, io, format).await,
        RolloutCommand::Pause { id, reason } => {
            let r = client
                .fleet
                .pause_rollout(pb::PauseRolloutRequest {
                    rollout_id: id,
                    reason: reason.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let headline = format!(
                "Rollout {} is {}: no new cluster starts; running operations finish. Resume with: flotilla rollout \
                 resume {}",
                r.id,
                render::rollout_state(r.state),
                r.id
            );
            print_rollout(io, format, &r, &headline)?;
        }
        RolloutCommand::Resume { id } => {
            let r = client
                .fleet
                .resume_rollout(pb::ResumeRolloutRequest { rollout_id: id })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let headline = format!("Rollout {} is {}.", r.id, render::rollout_state(r.state));
            print_rollout(io, format, &r, &headline)?;
        }
        RolloutCommand::Cancel { id, reason } => {
            let r = client
                .fleet
                .cancel_rollout(pb::CancelRolloutRequest {
                    rollout_id: id,
                    reason: reason.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let headline = format!(
                "Rollout {} is {}: no new cluster starts; running operations are cancelled.",
                r.id,
                render::rollout_state(r.state)
            );
            print_rollout(io, format, &r, &headline)?;
        }
        RolloutCommand::Approve { id, stage, comment } => {
            let current = get_rollout(&mut client, &id).await?;
            let index = stage_index(&current, &stage)?;
            let r = client
                .fleet
                .approve_stage(pb::ApproveStageRequest {
                    rollout_id: id,
                    stage_index: index,
                    comment: comment.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            let headline = format!(
                "Approved stage {stage} (#{index}) of rollout {}; the rollout is {}.",
                r.id,
                render::rollout_state(r.state)
            );
            print_rollout(io, format, &r, &headline)?;
        }
    }
    Ok(Outcome::Done)
}

/// A stage named `stage`, or at index `stage`.
pub fn stage_index(r: &pb::Rollout, stage: &str) -> Result<u32, CliError> {
    let name = |s: &pb::Stage| s.spec.as_ref().map_or(String::new(), |sp| sp.name.clone());
    if let Some(s) = r.stages.iter().find(|s| name(s) == stage) {
        return Ok(s.index);
    }
    if let Ok(i) = stage.parse::<u32>() {
        if r.stages.iter().any(|s| s.index == i) {
            return Ok(i);
        }
    }
    let known: Vec<String> = r
        .stages
        .iter()
        .map(|s| format!("{} (#{})", name(s), s.index))
        .collect();
    Err(CliError::Usage(format!(
        "rollout {} has no stage `{stage}`; name one of: {}",
        r.id,
        known.join(", ")
    )))
}
