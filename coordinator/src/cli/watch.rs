//! Following an operation or a rollout to its end: events from `WatchOperation` / `WatchRollout`
//! folded into the current state, shown as live progress bars on a terminal (indicatif), as one line
//! per event otherwise, or as one JSON object (YAML document) per event; then a summary.
//!
//! A watch that breaks (coordinator restart, network) is opened again: its first event is a full
//! snapshot, so nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use flotilla_proto::fleet::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use jiff::Timestamp;
use serde::Serialize;

use super::connect::Client;
use super::error::CliError;
use super::render::{
    self, BlockerView, ClusterStateView, Format, OperationView, ProgressView, RolloutView, StepView,
};
use super::{Io, LiveTarget, Outcome};

/// How many times a broken watch is opened again before giving up.
const RECONNECTS: u32 = 5;
/// Blocker lines shown at most under a live display.
const MAX_BLOCKER_LINES: usize = 8;

// === Operation tracking (pure) ===

/// The watched operation's state, built from its events.
#[derive(Debug, Default, Clone)]
pub struct OperationTracker {
    /// The operation as last known.
    pub operation: Option<pb::Operation>,
    /// The number of the last event-log line seen (a reconnecting watch asks for those after it).
    pub last_log: u64,
}

impl OperationTracker {
    /// Applies one event. Returns false for a log line already seen (after a reconnect), which
    /// is not shown again.
    pub fn apply(&mut self, event: &pb::OperationEvent) -> bool {
        use pb::operation_event::Event;
        match &event.event {
            Some(Event::Log(_)) if event.sequence <= self.last_log => return false,
            Some(Event::Log(_)) => self.last_log = event.sequence,
            Some(Event::Snapshot(op)) => self.operation = Some(op.clone()),
            Some(Event::Step(step)) => {
                if let Some(op) = &mut self.operation {
                    match op.steps.iter_mut().find(|s| s.step_id == step.step_id) {
                        Some(s) => {
                            let progress = s.progress.take();
                            *s = step.clone();
                            // A state change without progress keeps the last report.
                            if s.progress.is_none() && s.state == pb::StepState::Running as i32 {
                                s.progress = progress;
                            }
                        }
                        None => op.steps.push(step.clone()),
                    }
                }
            }
            Some(Event::Progress(p)) => {
                if let Some(op) = &mut self.operation {
                    if let Some(s) = op.steps.iter_mut().find(|s| s.step_id == p.step_id) {
                        s.progress = Some(p.clone());
                    }
                }
            }
            Some(Event::State(state)) => {
                if let Some(op) = &mut self.operation {
                    op.state = *state;
                }
            }
            None => {}
        }
        true
    }

    /// Whether the operation has ended.
    pub fn ended(&self) -> bool {
        self.operation
            .as_ref()
            .is_some_and(|o| render::operation_ended(o.state))
    }
}

// === Rollout tracking (pure) ===

/// The watched rollout's state, built from its events.
#[derive(Debug, Default, Clone)]
pub struct RolloutTracker {
    /// The rollout as last known.
    pub rollout: Option<pb::Rollout>,
    /// The sequence of the last event applied.
    pub sequence: Option<u64>,
}

impl RolloutTracker {
    /// Applies one event; false when an event was missed (see [`OperationTracker::apply`]).
    pub fn apply(&mut self, event: &pb::RolloutEvent) -> bool {
        use pb::rollout_event::Event;
        let in_order = match (self.sequence, &event.event) {
            (_, Some(Event::Snapshot(_))) | (None, _) => true,
            (Some(last), _) => event.sequence <= last + 1,
        };
        self.sequence = Some(event.sequence);
        let Some(r) = (match &event.event {
            Some(Event::Snapshot(r)) => {
                self.rollout = Some(r.clone());
                return in_order;
            }
            _ => self.rollout.as_mut(),
        }) else {
            return in_order;
        };
        match &event.event {
            Some(Event::Stage(stage)) => match r.stages.iter_mut().find(|s| s.index == stage.index) {
                Some(s) => {
                    let clusters = std::mem::take(&mut s.clusters);
                    *s = stage.clone();
                    if s.clusters.is_empty() {
                        s.clusters = clusters;
                    }
                }
                None => r.stages.push(stage.clone()),
            },
            Some(Event::Cluster(c)) => {
                let found = r
                    .stages
                    .iter_mut()
                    .flat_map(|s| s.clusters.iter_mut())
                    .find(|x| x.cluster_id == c.cluster_id);
                match found {
                    Some(x) => *x = c.clone(),
                    None => {
                        // A cluster the snapshot did not list: it belongs to the running stage.
                        let running = r
                            .stages
                            .iter_mut()
                            .find(|s| s.state == pb::RolloutState::Running as i32);
                        if let Some(s) = running {
                            s.clusters.push(c.clone());
                        }
                    }
                }
            }
            Some(Event::State(state)) => r.state = *state,
            Some(Event::Snapshot(_)) | None => {}
        }
        in_order
    }

    /// Whether the rollout has ended.
    pub fn ended(&self) -> bool {
        self.rollout
            .as_ref()
            .is_some_and(|r| render::rollout_ended(r.state))
    }
}

// === Event lines ===

fn clock(at: Option<&prost_types::Timestamp>) -> String {
    let t = at
        .and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
        .unwrap_or_else(Timestamp::now);
    t.strftime("%H:%M:%S").to_string()
}

/// One JSON/YAML object per watch event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "type")]
enum OperationLine {
    /// The whole operation.
    Snapshot {
        sequence: u64,
        at: Option<String>,
        operation: OperationView,
    },
    /// A step changed.
    Step {
        operation_id: String,
        sequence: u64,
        at: Option<String>,
        step: StepView,
    },
    /// A step reported progress.
    Progress {
        operation_id: String,
        sequence: u64,
        at: Option<String>,
        step_id: String,
        step: &'static str,
        progress: ProgressView,
    },
    /// The operation changed state.
    State {
        operation_id: String,
        sequence: u64,
        at: Option<String>,
        state: &'static str,
    },
    /// A line of the operation's event log.
    Log {
        operation_id: String,
        sequence: u64,
        at: Option<String>,
        step_id: String,
        step: &'static str,
        message: String,
    },
    /// The end of the watch: the final operation.
    Summary { operation: OperationView },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "type")]
enum RolloutLine {
    Snapshot {
        sequence: u64,
        at: Option<String>,
        rollout: RolloutView,
    },
    Stage {
        rollout_id: String,
        sequence: u64,
        at: Option<String>,
        stage: render::StageView,
    },
    Cluster {
        rollout_id: String,
        sequence: u64,
        at: Option<String>,
        cluster: ClusterStateView,
    },
    State {
        rollout_id: String,
        sequence: u64,
        at: Option<String>,
        state: &'static str,
    },
    Summary {
        rollout: RolloutView,
    },
}

fn rfc3339(at: Option<&prost_types::Timestamp>) -> Option<String> {
    at.and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| t.to_string())
}

/// Writes one object as a JSON line or a YAML document.
fn write_object<T: Serialize>(out: &mut dyn Write, format: Format, value: &T) -> std::io::Result<()> {
    match format {
        Format::Yaml => {
            writeln!(out, "---")?;
            out.write_all(serde_yaml::to_string(value).expect("views serialize").as_bytes())?;
        }
        _ => writeln!(out, "{}", serde_json::to_string(value).expect("views serialize"))?,
    }
    out.flush()
}

fn blockers_of(step: &pb::OperationStep) -> Vec<BlockerView> {
    let from_error = step.error.iter().flat_map(|e| e.blockers.iter());
    let from_progress = step
        .progress
        .iter()
        .filter(|_| step.state == pb::StepState::Running as i32)
        .flat_map(|p| p.blockers.iter());
    from_error.chain(from_progress).map(BlockerView::from).collect()
}

/// The plain-text lines for one operation event (after it was applied to `op`).
fn operation_event_lines(event: &pb::OperationEvent, op: &pb::Operation, now: Timestamp) -> Vec<String> {
    use pb::operation_event::Event;
    let t = clock(event.at.as_ref());
    match &event.event {
        Some(Event::Snapshot(o)) => {
            let running = o
                .steps
                .iter()
                .find(|s| s.state == pb::StepState::Running as i32)
                .map(|s| format!(", step {}", render::step_kind(s.kind)))
                .unwrap_or_default();
            vec![format!(
                "{t} operation {} on {}: {} — {}{running}",
                o.id,
                o.cluster_id,
                render::operation_state(o.state),
                render::work_summary(o.work.as_ref())
            )]
        }
        Some(Event::Step(s)) => {
            let view = StepView::new(s, now);
            let mut line = format!("{t} {}: {}", view.kind, view.state);
            if view.attempt > 1 && view.state == "Running" {
                line.push_str(&format!(" (attempt {})", view.attempt));
            }
            if view.finished_at.is_some() {
                if let Some(secs) = view.seconds {
                    line.push_str(&format!(" in {}", render::human_duration(secs)));
                }
            }
            let note = if view.state == "Running" {
                String::new()
            } else {
                view.note()
            };
            if !note.is_empty() {
                line.push_str(&format!(" — {note}"));
            }
            let mut lines = vec![line];
            lines.extend(
                blockers_of(s)
                    .iter()
                    .map(|b| format!("{t}   blocked: {}", render::blocker_line(b))),
            );
            lines
        }
        Some(Event::Progress(p)) => {
            let kind = op
                .steps
                .iter()
                .find(|s| s.step_id == p.step_id)
                .map_or("step", |s| render::step_kind(s.kind));
            let view = ProgressView::from(p);
            let mut lines = vec![format!("{t} {kind}: {}", render::progress_text(&view))];
            lines.extend(
                view.blockers
                    .iter()
                    .map(|b| format!("{t}   blocked: {}", render::blocker_line(b))),
            );
            lines
        }
        Some(Event::State(s)) => vec![format!(
            "{t} operation {}: {}",
            op.id,
            render::operation_state(*s)
        )],
        Some(Event::Log(line)) => vec![format!("{t} {}", log_text(line, op))],
        None => Vec::new(),
    }
}

/// A log line, with the step it concerns: `[Drain] attempt 2 started`.
fn log_text(line: &pb::LogLine, op: &pb::Operation) -> String {
    match step_of(op, &line.step_id) {
        "" => line.message.clone(),
        kind => format!("[{kind}] {}", line.message),
    }
}

/// The kind of the step `step_id` names, or "".
fn step_of(op: &pb::Operation, step_id: &str) -> &'static str {
    if step_id.is_empty() {
        return "";
    }
    op.steps
        .iter()
        .find(|s| s.step_id == step_id)
        .map_or("", |s| render::step_kind(s.kind))
}

fn operation_event_object(
    event: &pb::OperationEvent,
    op: &pb::Operation,
    now: Timestamp,
) -> Option<OperationLine> {
    use pb::operation_event::Event;
    let at = rfc3339(event.at.as_ref());
    let sequence = event.sequence;
    let operation_id = event.operation_id.clone();
    Some(match event.event.as_ref()? {
        Event::Snapshot(o) => OperationLine::Snapshot {
            sequence,
            at,
            operation: OperationView::new(o, now),
        },
        Event::Step(s) => OperationLine::Step {
            operation_id,
            sequence,
            at,
            step: StepView::new(s, now),
        },
        Event::Progress(p) => OperationLine::Progress {
            operation_id,
            sequence,
            at,
            step_id: p.step_id.clone(),
            step: op
                .steps
                .iter()
                .find(|s| s.step_id == p.step_id)
                .map_or("", |s| render::step_kind(s.kind)),
            progress: p.into(),
        },
        Event::State(s) => OperationLine::State {
            operation_id,
            sequence,
            at,
            state: render::operation_state(*s),
        },
        Event::Log(line) => OperationLine::Log {
            operation_id,
            sequence,
            at,
            step_id: line.step_id.clone(),
            step: step_of(op, &line.step_id),
            message: line.message.clone(),
        },
    })
}

// === Live display ===

fn header_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed}] {msg}").expect("valid template")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:<28} [{bar:25}] {pos:>4}/{len:<4} {msg}")
        .expect("valid template")
        .progress_chars("=> ")
}

fn line_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg}").expect("valid template")
}

/// Live progress of one operation: a header, a bar per step, and the current blockers.
struct LiveOperation {
    multi: MultiProgress,
    header: ProgressBar,
    steps: Vec<(String, ProgressBar)>,
    blockers: ProgressBar,
}

impl LiveOperation {
    fn new(target: LiveTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target.draw_target());
        let header = multi.add(ProgressBar::new_spinner().with_style(header_style()));
        header.enable_steady_tick(Duration::from_millis(200));
        let blockers = multi.add(ProgressBar::new(0).with_style(line_style()));
        LiveOperation {
            multi,
            header,
            steps: Vec::new(),
            blockers,
        }
    }

    fn update(&mut self, op: &pb::Operation, now: Timestamp) {
        self.header.set_prefix(format!("{} on {}", op.id, op.cluster_id));
        self.header.set_message(format!(
            "{} — {}",
            render::operation_state(op.state),
            render::work_summary(op.work.as_ref())
        ));
        let mut blocker_lines = Vec::new();
        for step in &op.steps {
            let bar = match self.steps.iter().find(|(id, _)| *id == step.step_id) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self
                        .multi
                        .insert_before(&self.blockers, ProgressBar::new(1).with_style(bar_style()));
                    self.steps.push((step.step_id.clone(), bar.clone()));
                    bar
                }
            };
            let view = StepView::new(step, now);
            let name = if view.hop.is_empty() {
                view.kind.to_owned()
            } else {
                format!("{} ({})", view.kind, view.hop)
            };
            bar.set_prefix(name);
            match view.state {
                "Running" => {
                    let (done, total) = view.progress.as_ref().map_or((0, 0), |p| (p.done, p.total));
                    bar.set_length(total.max(1));
                    bar.set_position(done.min(total.max(1)));
                    let mut msg = view
                        .progress
                        .as_ref()
                        .map(|p| p.message.clone())
                        .unwrap_or_default();
                    if view.attempt > 1 {
                        msg = format!("attempt {} {msg}", view.attempt);
                    }
                    bar.set_message(msg);
                }
                "Succeeded" | "Skipped" => {
                    bar.set_position(bar.length().unwrap_or(1));
                    let took = view.seconds.map(render::human_duration).unwrap_or_default();
                    bar.set_message(format!("{} {took} {}", view.state, view.note()));
                }
                "Pending" => bar.set_message("pending"),
                state => bar.set_message(format!("{state} {}", view.note())),
            }
            blocker_lines.extend(blockers_of(step).iter().map(render::blocker_line));
        }
        let shown = blocker_lines.len().min(MAX_BLOCKER_LINES);
        let mut text: Vec<String> = blocker_lines[..shown]
            .iter()
            .map(|l| format!("  blocked: {l}"))
            .collect();
        if blocker_lines.len() > shown {
            text.push(format!("  … and {} more", blocker_lines.len() - shown));
        }
        self.blockers.set_message(text.join("\n"));
    }

    fn log(&self, line: &str) {
        let _ = self.multi.println(format!("  {line}"));
    }

    fn finish(self) {
        self.header.finish();
        for (_, bar) in &self.steps {
            bar.abandon();
        }
        self.blockers.finish_and_clear();
        let _ = self.multi.clear();
    }
}

// === Operation watch ===

/// How a watch shows events.
enum Display {
    Live(Box<LiveOperation>),
    Lines,
    Objects(Format),
}

/// Follows an operation until it ends; prints a summary and returns its outcome.
pub async fn watch_operation(
    client: &mut Client,
    id: &str,
    io: &mut Io,
    format: Format,
) -> Result<Outcome, CliError> {
    let display = match format {
        Format::Table if io.live => Display::Live(Box::new(LiveOperation::new(io.live_target))),
        Format::Table => Display::Lines,
        f => Display::Objects(f),
    };
    if matches!(display, Display::Lines) {
        writeln!(
            io.err,
            "watching operation {id}; Ctrl-C stops watching (the operation goes on)"
        )?;
    }
    let mut watch = OperationWatch {
        id,
        tracker: OperationTracker::default(),
        display,
    };
    follow(client, &mut watch, io).await?;
    let OperationWatch { tracker, display, .. } = watch;
    if let Display::Live(live) = display {
        live.finish();
    }
    if !tracker.ended() {
        return Err(CliError::WatchEnded(format!(
            "the watch of operation {id} ended before the operation did; run `flotilla operations watch {id}` to \
             follow it again"
        )));
    }
    // The final word comes from GetOperation (the failure text is set with the final state).
    let op = match client
        .fleet
        .get_operation(pb::GetOperationRequest {
            operation_id: id.to_owned(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(_) => tracker.operation.clone().unwrap_or_default(),
    };
    let now = Timestamp::now();
    match format {
        Format::Table => {
            writeln!(io.out)?;
            write!(io.out, "{}", render::operation_detail(&op, now))?;
        }
        f => write_object(
            &mut *io.out,
            f,
            &OperationLine::Summary {
                operation: OperationView::new(&op, now),
            },
        )?,
    }
    io.out.flush()?;
    Ok(if op.state == pb::OperationState::Succeeded as i32 {
        Outcome::Done
    } else {
        Outcome::Failed
    })
}

/// One kind of watch [`follow`] runs: how its stream is opened and what each event does.
trait Watched {
    /// The stream's event.
    type Event;
    /// Opens (or reopens) the stream.
    async fn open(&self, client: &mut Client) -> Result<tonic::Streaming<Self::Event>, tonic::Status>;
    /// Whether `event` is news rather than a snapshot: only news resets the reconnect count, so
    /// a watch that breaks right after each snapshot gives up.
    fn is_news(event: &Self::Event) -> bool;
    /// Applies and shows `event`; returns whether the watched operation or rollout has ended.
    async fn show(&mut self, client: &mut Client, event: Self::Event, io: &mut Io) -> Result<bool, CliError>;
}

/// Follows `watch` until what it watches ends (`Ok(true)`), reopening its stream with backoff
/// when it breaks or closes early; `Ok(false)` once [`RECONNECTS`] reconnects in a row brought
/// no news.
async fn follow<W: Watched>(client: &mut Client, watch: &mut W, io: &mut Io) -> Result<bool, CliError> {
    let mut attempts = 0;
    'watch: loop {
        let mut stream = match watch.open(client).await {
            Ok(stream) => stream,
            Err(status) => {
                let err = client.status(status);
                if retryable(&err) && attempts < RECONNECTS {
                    attempts += 1;
                    backoff(attempts, io, &err).await?;
                    continue 'watch;
                }
                return Err(err);
            }
        };
        loop {
            let event = match stream.message().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(status) => {
                    let err = client.status(status);
                    if retryable(&err) && attempts < RECONNECTS {
                        attempts += 1;
                        backoff(attempts, io, &err).await?;
                        continue 'watch;
                    }
                    return Err(err);
                }
            };
            if W::is_news(&event) {
                attempts = 0;
            }
            if watch.show(client, event, io).await? {
                return Ok(true);
            }
        }
        // The stream closed before the end: open it again.
        if attempts >= RECONNECTS {
            return Ok(false);
        }
        attempts += 1;
        let err = CliError::WatchEnded("the coordinator closed the watch".into());
        backoff(attempts, io, &err).await?;
    }
}

/// `flotilla operations watch`: WatchOperation from the last log line seen.
struct OperationWatch<'a> {
    id: &'a str,
    tracker: OperationTracker,
    display: Display,
}

impl Watched for OperationWatch<'_> {
    type Event = pb::OperationEvent;

    async fn open(&self, client: &mut Client) -> Result<tonic::Streaming<Self::Event>, tonic::Status> {
        let request = pb::WatchOperationRequest {
            operation_id: self.id.to_owned(),
            since_sequence: self.tracker.last_log,
        };
        Ok(client.fleet.watch_operation(request).await?.into_inner())
    }

    fn is_news(event: &Self::Event) -> bool {
        !matches!(event.event, Some(pb::operation_event::Event::Snapshot(_)))
    }

    async fn show(
        &mut self,
        _client: &mut Client,
        event: Self::Event,
        io: &mut Io,
    ) -> Result<bool, CliError> {
        if !self.tracker.apply(&event) {
            return Ok(false);
        }
        let now = Timestamp::now();
        if let Some(op) = &self.tracker.operation {
            match &mut self.display {
                Display::Live(live) => {
                    if let Some(pb::operation_event::Event::Log(line)) = &event.event {
                        live.log(&format!("{} {}", clock(event.at.as_ref()), log_text(line, op)));
                    }
                    live.update(op, now)
                }
                Display::Lines => {
                    for line in operation_event_lines(&event, op, now) {
                        writeln!(io.out, "{line}")?;
                    }
                    io.out.flush()?;
                }
                Display::Objects(f) => {
                    if let Some(obj) = operation_event_object(&event, op, now) {
                        write_object(&mut *io.out, *f, &obj)?;
                    }
                }
            }
        }
        Ok(self.tracker.ended())
    }
}

fn retryable(err: &CliError) -> bool {
    matches!(err, CliError::Unreachable { .. } | CliError::WatchEnded(_))
        || matches!(
            err,
            CliError::Server {
                code: tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown,
                ..
            }
        )
}

async fn backoff(attempt: u32, io: &mut Io, err: &CliError) -> Result<(), CliError> {
    let wait = Duration::from_millis(500 << attempt.min(4));
    writeln!(
        io.err,
        "watch interrupted ({err}); reconnecting in {:.1}s (attempt {attempt} of {RECONNECTS})",
        wait.as_secs_f64()
    )?;
    tokio::time::sleep(wait).await;
    Ok(())
}

// === Rollout watch ===

fn cluster_line(c: &pb::ClusterState) -> String {
    let view = ClusterStateView::from(c);
    let step = if !view.failed_step.is_empty() {
        view.failed_step
    } else {
        view.current_step
    };
    let mut line = format!("{} {}", view.cluster_id, view.state);
    if !step.is_empty() {
        line.push_str(&format!(" {step}"));
    }
    if view.state == "Running" {
        if let Some(p) = &view.progress {
            let text = render::progress_text(p);
            if !text.is_empty() {
                line.push_str(&format!(" {text}"));
            }
        }
    }
    if let Some(e) = &view.error {
        line.push_str(&format!(" — {}: {}", e.code, e.message));
    } else if !view.reason.is_empty() {
        line.push_str(&format!(" — {}", view.reason));
    }
    line
}

fn cluster_blockers(c: &pb::ClusterState) -> Vec<BlockerView> {
    let running = c.state == pb::RolloutState::Running as i32;
    c.error
        .iter()
        .flat_map(|e| e.blockers.iter())
        .chain(
            c.progress
                .iter()
                .filter(|_| running)
                .flat_map(|p| p.blockers.iter()),
        )
        .map(BlockerView::from)
        .collect()
}

fn stage_name(s: &pb::Stage) -> String {
    s.spec
        .as_ref()
        .map_or_else(|| s.index.to_string(), |sp| sp.name.clone())
}

fn stage_message(r: &pb::Rollout, s: &pb::Stage, now: Timestamp) -> String {
    let state = render::rollout_state(s.state);
    match pb::RolloutState::try_from(s.state) {
        Ok(pb::RolloutState::WaitingForApproval) => format!(
            "{state}: run `flotilla rollout approve {} {}`",
            r.id,
            stage_name(s)
        ),
        Ok(pb::RolloutState::Soaking) => {
            let left = s
                .soak_until
                .as_ref()
                .and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
                .map(|t| render::human_duration(t.duration_since(now).as_secs_f64()));
            match left {
                Some(left) => format!("{state} ({left} left)"),
                None => state.to_owned(),
            }
        }
        _ if s.failures > 0 => format!("{state}, {} failed", s.failures),
        _ => state.to_owned(),
    }
}

fn rollout_event_lines(event: &pb::RolloutEvent, r: &pb::Rollout, now: Timestamp) -> Vec<String> {
    use pb::rollout_event::Event;
    let t = clock(event.at.as_ref());
    match &event.event {
        Some(Event::Snapshot(r)) => {
            let mut lines = vec![format!(
                "{t} rollout {} ({}): {} — {}",
                r.id,
                r.name,
                render::rollout_state(r.state),
                render::work_summary(r.work.as_ref())
            )];
            for s in &r.stages {
                lines.push(format!(
                    "{t}   stage {} ({} clusters): {}",
                    stage_name(s),
                    s.clusters.len(),
                    stage_message(r, s, now)
                ));
            }
            lines
        }
        Some(Event::Stage(s)) => vec![format!(
            "{t} stage {}: {}",
            stage_name(s),
            stage_message(r, s, now)
        )],
        Some(Event::Cluster(c)) => {
            let mut lines = vec![format!("{t} cluster {}", cluster_line(c))];
            lines.extend(
                cluster_blockers(c)
                    .iter()
                    .map(|b| format!("{t}   blocked: {}", render::blocker_line(b))),
            );
            lines
        }
        Some(Event::State(s)) => {
            let mut line = format!("{t} rollout {}: {}", r.id, render::rollout_state(*s));
            if !r.reason.is_empty() {
                line.push_str(&format!(" — {}", r.reason));
            }
            vec![line]
        }
        None => Vec::new(),
    }
}

fn rollout_event_object(event: &pb::RolloutEvent) -> Option<RolloutLine> {
    use pb::rollout_event::Event;
    let at = rfc3339(event.at.as_ref());
    let sequence = event.sequence;
    let rollout_id = event.rollout_id.clone();
    Some(match event.event.as_ref()? {
        Event::Snapshot(r) => RolloutLine::Snapshot {
            sequence,
            at,
            rollout: r.into(),
        },
        Event::Stage(s) => RolloutLine::Stage {
            rollout_id,
            sequence,
            at,
            stage: s.into(),
        },
        Event::Cluster(c) => RolloutLine::Cluster {
            rollout_id,
            sequence,
            at,
            cluster: c.into(),
        },
        Event::State(s) => RolloutLine::State {
            rollout_id,
            sequence,
            at,
            state: render::rollout_state(*s),
        },
    })
}

/// Live progress of a rollout: a header, a bar per stage, a line per running cluster.
struct LiveRollout {
    multi: MultiProgress,
    header: ProgressBar,
    stages: BTreeMap<u32, ProgressBar>,
    clusters: HashMap<String, ProgressBar>,
    /// Final cluster states already announced.
    announced: HashMap<String, i32>,
}

impl LiveRollout {
    fn new(target: LiveTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target.draw_target());
        let header = multi.add(ProgressBar::new_spinner().with_style(header_style()));
        header.enable_steady_tick(Duration::from_millis(200));
        LiveRollout {
            multi,
            header,
            stages: BTreeMap::new(),
            clusters: HashMap::new(),
            announced: HashMap::new(),
        }
    }

    fn update(&mut self, r: &pb::Rollout, now: Timestamp) {
        self.header.set_prefix(format!("{} {}", r.id, r.name));
        let mut msg = format!(
            "{} — {}",
            render::rollout_state(r.state),
            render::work_summary(r.work.as_ref())
        );
        if !r.reason.is_empty() {
            msg.push_str(&format!(" ({})", r.reason));
        }
        self.header.set_message(msg);
        // Stage bars, in order, right under the header.
        let mut last = self.header.clone();
        for s in &r.stages {
            let bar = self
                .stages
                .entry(s.index)
                .or_insert_with(|| {
                    self.multi
                        .insert_after(&last, ProgressBar::new(0).with_style(bar_style()))
                })
                .clone();
            let done = s
                .clusters
                .iter()
                .filter(|c| {
                    use pb::RolloutState as S;
                    matches!(
                        S::try_from(c.state),
                        Ok(S::Succeeded | S::Failed | S::Skipped | S::Cancelled)
                    )
                })
                .count();
            bar.set_prefix(format!("stage {}", stage_name(s)));
            bar.set_length(s.clusters.len() as u64);
            bar.set_position(done as u64);
            bar.set_message(stage_message(r, s, now));
            last = bar;
        }
        // A line per running cluster; finished ones are announced once above the bars.
        let mut running = Vec::new();
        for c in r.stages.iter().flat_map(|s| s.clusters.iter()) {
            use pb::RolloutState as S;
            match S::try_from(c.state) {
                Ok(S::Running | S::Paused) => running.push(c),
                Ok(S::Succeeded | S::Failed | S::Skipped | S::Cancelled)
                    if self.announced.get(&c.cluster_id) != Some(&c.state) =>
                {
                    self.announced.insert(c.cluster_id.clone(), c.state);
                    let mut text = format!("  {}", cluster_line(c));
                    for b in cluster_blockers(c) {
                        text.push_str(&format!("\n      blocked: {}", render::blocker_line(&b)));
                    }
                    let _ = self.multi.println(text);
                }
                _ => {}
            }
        }
        let ids: Vec<String> = running.iter().map(|c| c.cluster_id.clone()).collect();
        self.clusters.retain(|id, bar| {
            let keep = ids.contains(id);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        for c in running {
            let bar = self
                .clusters
                .entry(c.cluster_id.clone())
                .or_insert_with(|| {
                    let bar = self
                        .multi
                        .add(ProgressBar::new_spinner().with_style(line_style()));
                    bar.enable_steady_tick(Duration::from_millis(500));
                    bar
                })
                .clone();
            let blockers = cluster_blockers(c);
            let mut text = format!("    {}", cluster_line(c));
            for b in blockers.iter().take(3) {
                text.push_str(&format!("\n      blocked: {}", render::blocker_line(b)));
            }
            if blockers.len() > 3 {
                text.push_str(&format!("\n      … and {} more", blockers.len() - 3));
            }
            bar.set_message(text);
        }
    }

    fn finish(self) {
        self.header.finish();
        for bar in self.stages.values() {
            bar.abandon();
        }
        for bar in self.clusters.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

enum RolloutDisplay {
    Live(Box<LiveRollout>),
    Lines,
    Objects(Format),
}

/// Follows a rollout until it ends; prints a summary and returns its outcome.
pub async fn watch_rollout(
    client: &mut Client,
    id: &str,
    io: &mut Io,
    format: Format,
) -> Result<Outcome, CliError> {
    let display = match format {
        Format::Table if io.live => RolloutDisplay::Live(Box::new(LiveRollout::new(io.live_target))),
        Format::Table => RolloutDisplay::Lines,
        f => RolloutDisplay::Objects(f),
    };
    if matches!(display, RolloutDisplay::Lines) {
        writeln!(
            io.err,
            "watching rollout {id}; Ctrl-C stops watching (the rollout goes on)"
        )?;
    }
    let mut watch = RolloutWatch {
        id,
        tracker: RolloutTracker::default(),
        display,
    };
    follow(client, &mut watch, io).await?;
    let RolloutWatch { tracker, display, .. } = watch;
    if let RolloutDisplay::Live(live) = display {
        live.finish();
    }
    if !tracker.ended() {
        return Err(CliError::WatchEnded(format!(
            "the watch of rollout {id} ended before the rollout did; run `flotilla rollout watch {id}` to follow \
             it again"
        )));
    }
    let r = match client
        .fleet
        .get_rollout(pb::GetRolloutRequest {
            rollout_id: id.to_owned(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(_) => tracker.rollout.clone().unwrap_or_default(),
    };
    let now = Timestamp::now();
    match format {
        Format::Table => {
            writeln!(io.out)?;
            write!(io.out, "{}", render::rollout_detail(&r, now))?;
        }
        f => write_object(&mut *io.out, f, &RolloutLine::Summary { rollout: (&r).into() })?,
    }
    io.out.flush()?;
    Ok(if r.state == pb::RolloutState::Succeeded as i32 {
        Outcome::Done
    } else {
        Outcome::Failed
    })
}

/// `flotilla rollout watch`: WatchRollout (a snapshot, then events).
struct RolloutWatch<'a> {
    id: &'a str,
    tracker: RolloutTracker,
    display: RolloutDisplay,
}

impl Watched for RolloutWatch<'_> {
    type Event = pb::RolloutEvent;

    async fn open(&self, client: &mut Client) -> Result<tonic::Streaming<Self::Event>, tonic::Status> {
        let request = pb::WatchRolloutRequest {
            rollout_id: self.id.to_owned(),
        };
        Ok(client.fleet.watch_rollout(request).await?.into_inner())
    }

    fn is_news(event: &Self::Event) -> bool {
        !matches!(event.event, Some(pb::rollout_event::Event::Snapshot(_)))
    }

    async fn show(&mut self, client: &mut Client, event: Self::Event, io: &mut Io) -> Result<bool, CliError> {
        if !self.tracker.apply(&event) {
            tracing::debug!(
                rollout = self.id,
                sequence = event.sequence,
                "gap in the event sequence; refetching"
            );
            let r = client
                .fleet
                .get_rollout(pb::GetRolloutRequest {
                    rollout_id: self.id.to_owned(),
                })
                .await
                .map_err(|s| client.status(s))?
                .into_inner();
            self.tracker.rollout = Some(r);
        }
        let now = Timestamp::now();
        if let Some(r) = &self.tracker.rollout {
            match &mut self.display {
                RolloutDisplay::Live(live) => live.update(r, now),
                RolloutDisplay::Lines => {
                    for line in rollout_event_lines(&event, r, now) {
                        writeln!(io.out, "{line}")?;
                    }
                    io.out.flush()?;
                }
                RolloutDisplay::Objects(f) => {
                    if let Some(obj) = rollout_event_object(&event) {
                        write_object(&mut *io.out, *f, &obj)?;
                    }
                }
            }
        }
        Ok(self.tracker.ended())
    }
}

#[cfg(test)]
mod tests;
