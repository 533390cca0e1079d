//! Running one rollout as an operator would: `CreateRollout` over the Fleet API, then following
//! it live with the `flotilla rollout watch` display (a bar per stage, a line per running cluster
//! with its step and pods left, blockers by name; plain lines when not on a terminal).

use std::io::Write;

use flotilla_coordinator::cli::connect::Client;
use flotilla_coordinator::cli::render::{self, Format};
use flotilla_coordinator::cli::spec::RolloutPlan;
use flotilla_coordinator::cli::{watch, Io};
use flotilla_proto::fleet::v1 as pb;

use super::{spec, DemoError};

/// One line per stage: `dev (4 clusters, 4 at once, soak 5s)`.
pub fn stages_text(request: &pb::CreateRolloutRequest, counts: &[usize]) -> String {
    request
        .stages
        .iter()
        .zip(counts)
        .map(|(s, n)| {
            let at_once = match spec::at_once(s, *n) {
                p if p >= *n => "all at once".to_string(),
                p => format!("{p} at once"),
            };
            let soak = s
                .soak
                .as_ref()
                .map(|d| format!(", soak {}", render::human_duration(d.seconds as f64)))
                .unwrap_or_default();
            format!("{} ({n} cluster(s), {at_once}{soak})", s.name)
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Creates the rollout, follows it to its end and returns it as it ended.
pub async fn run(
    client: &mut Client,
    plan: &RolloutPlan,
    stage_counts: &[usize],
    io: &mut Io,
) -> Result<pb::Rollout, DemoError> {
    let created = client
        .fleet
        .create_rollout(plan.request.clone())
        .await
        .map_err(|s| DemoError::api("CreateRollout", client.status(s)))?
        .into_inner();
    writeln!(
        io.out,
        "rollout {} ({}) created: {}\n  stages: {}",
        created.id,
        created.name,
        render::work_summary(created.work.as_ref()),
        stages_text(&plan.request, stage_counts)
    )?;
    io.out.flush()?;
    tracing::info!(rollout = %created.id, name = %created.name, "rollout created");
    // The watch's outcome is read again from GetRollout below; a failed rollout is not an error
    // here but a result the summary reports.
    watch::watch_rollout(client, &created.id, io, Format::Table)
        .await
        .map_err(|e| DemoError::api("WatchRollout", e))?;
    let ended = client
        .fleet
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: created.id.clone(),
        })
        .await
        .map_err(|s| DemoError::api("GetRollout", client.status(s)))?
        .into_inner();
    Ok(ended)
}
