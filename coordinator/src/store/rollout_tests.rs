//! Store tests for rollouts: the contract on both implementations, sled across a reopen, and
//! acknowledged rollout writes surviving a SIGKILL.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::rollout::spec::{Concurrency, MinorVersion, RolloutSpec, StageSpec, UpgradeSpec, Work};
use crate::rollout::{next, ClusterFacts, ClusterInventory, Event, Outcome, Rollout, Selector};

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).expect("valid timestamp")
}

/// A started rollout over `n` clusters in two stages.
fn rollout(id: &str, n: usize) -> Rollout {
    let stage = |name: &str, sel: &str| StageSpec {
        name: name.into(),
        selector: Selector::parse(sel).expect("valid"),
        max_concurrency: Concurrency::Percent(50),
        soak: Duration::from_secs(60),
        max_failures: 2,
        require_approval: name == "prod",
    };
    let spec = RolloutSpec {
        name: format!("upgrade {id}"),
        work: Work::Upgrade(UpgradeSpec {
            target: MinorVersion::parse_target("1.35").expect("valid"),
            force: false,
            migrate_self_managed: false,
            migration: None,
        }),
        selector: Selector::everything(),
        stages: vec![stage("dev", "env=dev"), stage("prod", "env=prod")],
        agent_disconnect_timeout: Duration::from_secs(600),
        start_paused: false,
    };
    let clusters = (0..n)
        .map(|i| ClusterFacts {
            name: format!("c{i:04}"),
            labels: BTreeMap::from([("env".into(), if i % 3 == 0 { "dev" } else { "prod" }.into())]),
            connected: true,
            last_seen: Some(at(0)),
            inventory: Some(ClusterInventory {
                version: "v1.33.4-eks-1".into(),
                self_managed_nodegroups: vec!["ng-old".into()],
            }),
        })
        .collect();
    let r = Rollout::new(id, spec, "alice", at(0));
    next(&r, &Event::Start { clusters }, at(1)).0
}

fn record(r: Rollout) -> RolloutRecord {
    RolloutRecord {
        rollout: r,
        updated_at: at(1),
        version: 0,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

fn line(i: u64, cluster: Option<&str>) -> NewRolloutEvent {
    NewRolloutEvent {
        at: at(i as i64),
        cluster: cluster.map(str::to_string),
        message: format!("line {i}"),
    }
}

fn contract(store: &dyn Store) {
    let created = store.create_rollout(&record(rollout("r-1", 6))).unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(store.get_rollout("r-1").unwrap(), Some(created.clone()));
    assert_eq!(store.get_rollout("nope").unwrap(), None);
    assert!(matches!(
        store.create_rollout(&record(rollout("r-1", 1))),
        Err(StoreError::RolloutExists(id)) if id == "r-1"
    ));
    store.create_rollout(&record(rollout("r-0", 2))).unwrap();
    let ids: Vec<String> = store
        .list_rollouts()
        .unwrap()
        .into_iter()
        .map(|r| r.rollout.id)
        .collect();
    assert_eq!(ids, ["r-0", "r-1"]);

    // CAS with the state machine's next state; the id and version are the store's.
    let before = created.rollout.clone();
    let (after, _) = next(
        &before,
        &Event::OperationFinished {
            cluster: "c0000".into(),
            operation_id: "r-1/c0000/1".into(),
            outcome: Outcome::Succeeded,
        },
        at(2),
    );
    assert_ne!(after, before);
    let updated = store
        .update_rollout("r-1", 1, &mut |rec| {
            rec.rollout = after.clone();
            rec.rollout.id = "hijack".into();
            rec.updated_at = at(2);
            rec.version = 99;
        })
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.rollout.id, "r-1");
    assert_eq!(updated.rollout.stages, after.stages);
    assert_eq!(store.get_rollout("r-1").unwrap(), Some(updated));
    let conflict = store.update_rollout("r-1", 1, &mut |_| {});
    assert!(
        matches!(
            conflict,
            Err(StoreError::RolloutConflict {
                expected: 1,
                found: 2,
                ..
            })
        ),
        "{conflict:?}"
    );
    assert!(matches!(
        store.update_rollout("nope", 1, &mut |_| {}),
        Err(StoreError::RolloutNotFound(_))
    ));

    // Event logs: per-rollout sequences, batches in order, since-filter.
    let first = store
        .append_rollout_events("r-1", &[line(1, None), line(2, Some("c0000"))])
        .unwrap();
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(first[1].cluster.as_deref(), Some("c0000"));
    assert_eq!(
        store.append_rollout_events("r-1", &[line(3, None)]).unwrap()[0].seq,
        3
    );
    assert!(store.append_rollout_events("r-1", &[]).unwrap().is_empty());
    assert_eq!(
        store.append_rollout_events("r-0", &[line(9, None)]).unwrap()[0].seq,
        1
    );
    let seqs = |r, since| {
        store
            .list_rollout_events(r, since)
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs("r-1", 0), [1, 2, 3]);
    assert_eq!(seqs("r-1", 2), [3]);
    assert_eq!(seqs("r-1", u64::MAX), Vec::<u64>::new());
    assert_eq!(seqs("r-0", 0), [1]);
    assert_eq!(store.list_rollout_events("r-1", 0).unwrap()[1].message, "line 2");
    assert!(matches!(
        store.append_rollout_events("nope", &[line(1, None)]),
        Err(StoreError::RolloutNotFound(_))
    ));
    // Rollout and operation logs are separate.
    assert!(store.list_events("r-1", 0).unwrap().is_empty());

    // One transition with its log lines: the new state and the lines, in one write.
    let prev = store.get_rollout("r-1").unwrap().unwrap();
    let (after, _) = next(
        &prev.rollout,
        &Event::OperationFinished {
            cluster: "c0000".into(),
            operation_id: "r-1/c0000/2".into(),
            outcome: Outcome::Succeeded,
        },
        at(3),
    );
    let changed: Vec<&str> = after
        .changed_clusters(&prev.rollout)
        .map(|(_, _, c)| c.name.as_str())
        .collect();
    assert_eq!(
        changed,
        ["c0000", "c0003"],
        "c0000 succeeds, the next dev cluster starts"
    );
    let (committed, lines) = store
        .commit_rollout(&prev, &after, at(3), &[line(4, Some("c0003"))])
        .unwrap();
    assert_eq!(committed.version, 3);
    assert_eq!(committed.updated_at, at(3));
    assert_eq!(committed.rollout, after);
    assert_eq!(lines.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    assert_eq!(store.get_rollout("r-1").unwrap(), Some(committed.clone()));
    assert_eq!(seqs("r-1", 3), [4]);
    // A commit over a stale read is refused, and writes neither state nor lines.
    let stale = store.commit_rollout(&prev, &prev.rollout, at(4), &[line(5, None)]);
    assert!(
        matches!(
            stale,
            Err(StoreError::RolloutConflict {
                expected: 2,
                found: 3,
                ..
            })
        ),
        "{stale:?}"
    );
    assert_eq!(store.get_rollout("r-1").unwrap(), Some(committed.clone()));
    assert_eq!(seqs("r-1", 0), [1, 2, 3, 4]);
    // No lines: the state alone.
    let (again, none) = store
        .commit_rollout(&committed, &committed.rollout, at(5), &[])
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(again.version, 4);
    let mut gone = committed.clone();
    gone.rollout.id = "nope".into();
    assert!(matches!(
        store.commit_rollout(&gone, &committed.rollout, at(5), &[]),
        Err(StoreError::RolloutNotFound(_))
    ));
    // A state with fewer clusters than the stored one reads back as written, without the
    // cluster it dropped.
    let mut fewer = again.rollout.clone();
    let dropped = fewer.stages[1].clusters.pop().expect("prod has clusters");
    let (shrunk, _) = store.commit_rollout(&again, &fewer, at(6), &[]).unwrap();
    let read = store.get_rollout("r-1").unwrap().expect("r-1");
    assert_eq!(read, shrunk);
    assert!(read.rollout.find(&dropped.name).is_none());
}

fn retention(store: &dyn Store) {
    store.create_rollout(&record(rollout("r", 1))).unwrap();
    for i in 1..=4 {
        store.append_rollout_events("r", &[line(i, None)]).unwrap();
    }
    store
        .append_rollout_events("r", &(5..=12).map(|i| line(i, None)).collect::<Vec<_>>())
        .unwrap();
    let seqs: Vec<u64> = store
        .list_rollout_events("r", 0)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [8, 9, 10, 11, 12]);
}

#[test]
fn mem_rollout_contract() {
    contract(&MemStore::default());
}

#[test]
fn mem_rollout_retention() {
    retention(&MemStore::with_retention(5));
}

#[test]
fn sled_rollout_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&SledStore::open(dir.path()).unwrap());
}

/// Opens the store once the previous handle has let go of the directory (see `tests::reopen`).
fn reopen(dir: &Path, retention: u64) -> SledStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open_with(
            dir,
            sled::SledOptions {
                event_retention: retention,
            },
        ) {
            Err(StoreError::Backend(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn sled_rollouts_and_their_logs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let stored = {
        let store = reopen(dir.path(), 5);
        retention(&store);
        store.create_rollout(&record(rollout("big", 1000))).unwrap()
    };
    let store = reopen(dir.path(), 5);
    assert_eq!(store.get_rollout("big").unwrap(), Some(stored.clone()));
    assert_eq!(stored.rollout.clusters().count(), 1000);
    assert_eq!(
        store.append_rollout_events("r", &[line(13, None)]).unwrap()[0].seq,
        13
    );
    let seqs: Vec<u64> = store
        .list_rollout_events("r", 0)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [9, 10, 11, 12, 13]);
    // The state machine goes on from the reloaded state exactly as from the one it wrote.
    let resumed = next(&stored.rollout, &Event::Restarted, at(5));
    let reloaded = store.get_rollout("big").unwrap().unwrap().rollout;
    assert_eq!(next(&reloaded, &Event::Restarted, at(5)), resumed);
}

#[test]
fn sled_concurrent_rollout_writers_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store.create_rollout(&record(rollout("r", 3))).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = &store;
                s.spawn(move || store.update_rollout("r", 1, &mut |rec| rec.updated_at = at(i)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| matches!(r, Err(StoreError::RolloutConflict { .. }))));
}

// === crash: SIGKILL a rollout writer; every acknowledged version and event is there ===

const CRASH_DIR_ENV: &str = "FLOTILLA_ROLLOUT_CRASH_DIR";

/// The child half of [`sled_acknowledged_rollout_writes_survive_sigkill`] (which re-executes
/// itself with [`CRASH_DIR_ENV`] set): moves a rollout on (operation after operation succeeding)
/// until killed, printing an `ack` after each write.
fn rollout_crash_child(dir: &std::ffi::OsStr) {
    let store = SledStore::open(Path::new(dir)).unwrap();
    let mut out = std::io::stdout().lock();
    let mut rec = store.create_rollout(&record(rollout("r", 60))).unwrap();
    writeln!(out, "ack version {}", rec.version).unwrap();
    let mut t = 2;
    // Bounded, in case the parent is gone; it kills us long before.
    for _ in 0..10_000 {
        // Finish every running operation; the machine starts the next ones.
        let running: Vec<(String, String)> = rec
            .rollout
            .clusters()
            .filter_map(|(_, c)| {
                c.operation
                    .as_ref()
                    .filter(|o| o.running)
                    .map(|o| (c.name.clone(), o.id.clone()))
            })
            .collect();
        let mut events: Vec<Event> = running
            .into_iter()
            .map(|(cluster, operation_id)| Event::OperationFinished {
                cluster,
                operation_id,
                outcome: Outcome::Succeeded,
            })
            .collect();
        events.push(Event::Tick);
        events.push(Event::Approve {
            stage: 1,
            by: "crash-test".into(),
            comment: String::new(),
        });
        for e in events {
            t += 100;
            let (n, actions) = next(&rec.rollout, &e, at(t));
            let lines: Vec<NewRolloutEvent> = actions
                .iter()
                .filter_map(|a| match a {
                    crate::rollout::Action::RecordEvent { cluster, message } => Some(NewRolloutEvent {
                        at: at(t),
                        cluster: cluster.clone(),
                        message: message.clone(),
                    }),
                    _ => None,
                })
                .collect();
            // As the rollout runner writes: the transition and its lines in one commit.
            let (committed, appended) = store.commit_rollout(&rec, &n, at(t), &lines).unwrap();
            rec = committed;
            writeln!(out, "ack version {}", rec.version).unwrap();
            if let Some(last) = appended.last() {
                writeln!(out, "ack event {}", last.seq).unwrap();
            }
            out.flush().unwrap();
        }
        if rec.rollout.is_final() {
            return;
        }
    }
}

#[test]
fn sled_acknowledged_rollout_writes_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
        return rollout_crash_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::rollout_tests::sled_acknowledged_rollout_writes_survive_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = Vec::new();
    while acks.len() < 41 {
        match lines.next() {
            Some(line) => {
                let line = line.unwrap();
                if line.starts_with("ack ") {
                    acks.push(line);
                }
            }
            None => break,
        }
    }
    let _ = child.kill(); // SIGKILL (the child may already have finished its rollout)
    child.wait().unwrap();
    acks.extend(lines.map_while(Result::ok).filter(|l| l.starts_with("ack ")));
    assert!(
        acks.len() >= 41,
        "the writer acknowledged only {} writes",
        acks.len()
    );

    let store = reopen(dir.path(), DEFAULT_EVENT_RETENTION);
    let rec = store.get_rollout("r").unwrap().expect("acknowledged rollout");
    let last_version = acks
        .iter()
        .filter_map(|a| a.strip_prefix("ack version "))
        .filter_map(|v| v.parse::<u64>().ok())
        .max()
        .expect("versions");
    assert!(
        rec.version >= last_version,
        "lost version {last_version}: found {}",
        rec.version
    );
    let last_event = acks
        .iter()
        .filter_map(|a| a.strip_prefix("ack event "))
        .filter_map(|v| v.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let seqs: Vec<u64> = store
        .list_rollout_events("r", 0)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(
        seqs.len() as u64 >= last_event,
        "lost events: {} < {last_event}",
        seqs.len()
    );
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "gaps in {seqs:?}");
    // Every cluster is back in its place, each read from its own key.
    assert_eq!(rec.rollout.clusters().count(), 60);
    // The reloaded rollout is usable: a restart re-derives what was in flight.
    let (again, _) = next(&rec.rollout, &Event::Restarted, at(1_000_000));
    assert_eq!(again.stages.len(), 2);
}

/// A data dir written by a coordinator of schema 2 (each rollout stored whole) opens as schema 3
/// with every rollout intact, and goes on from there.
#[test]
fn sled_schema_2_rollouts_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let old = {
        let mut r = record(rollout("old", 30));
        r.version = 7;
        r
    };
    {
        let db = ::sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", "2")
            .unwrap();
        db.open_tree("rollouts")
            .unwrap()
            .insert("old", serde_json::to_vec(&old).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path(), DEFAULT_EVENT_RETENTION);
    let migrated = store.get_rollout("old").unwrap().expect("migrated rollout");
    assert_eq!(migrated, old);
    assert_eq!(store.list_rollouts().unwrap(), std::slice::from_ref(&old));
    let (after, _) = next(&migrated.rollout, &Event::Tick, at(9));
    let (committed, _) = store.commit_rollout(&migrated, &after, at(9), &[]).unwrap();
    assert_eq!(committed.version, 8);
    drop(store);
    // Opening again finds schema 3 and the same rollout.
    let store = reopen(dir.path(), DEFAULT_EVENT_RETENTION);
    assert_eq!(store.get_rollout("old").unwrap(), Some(committed));
}
