//! Store tests: the contract on both implementations, and sled's durability (reopen, schema, crash).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use jiff::Timestamp;

use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).expect("valid timestamp")
}

fn cluster(name: &str) -> ClusterRecord {
    ClusterRecord {
        name: name.into(),
        region: "eu-west-1".into(),
        eks_cluster_name: format!("eks-{name}"),
        labels: [("env".to_owned(), "dev".to_owned())].into(),
        connected: false,
        last_seen: None,
    }
}

fn operation(id: &str, cluster: &str) -> OperationRecord {
    let step = |id: &str, kind: &str| StepRecord {
        id: id.into(),
        kind: kind.into(),
        state: StepState::Pending,
        attempts: 0,
        started_at: None,
        finished_at: None,
        error: None,
        error_code: None,
        error_detail: None,
        outputs: serde_json::Value::Null,
    };
    OperationRecord {
        id: id.into(),
        cluster: cluster.into(),
        kind: OperationKind::Migration,
        params: serde_json::json!({ "surge_percent": 100 }),
        state: OperationState::Pending,
        steps: vec![step("1", "CreateManagedNodegroup"), step("2", "WaitNodesReady")],
        machine: None,
        rollout_id: None,
        created_by: "spiffe://flotilla/operator/operator/test".into(),
        traceparent: Some("00-5ca1ab1e0f1071117ace000000c0ffee-00f067aa0ba902b7-01".into()),
        created_at: at(0),
        started_at: None,
        finished_at: None,
        updated_at: at(0),
        version: 0,
    }
}

fn event(i: u64) -> NewEvent {
    NewEvent {
        at: at(i as i64),
        step: Some("1".into()),
        message: format!("event {i}"),
    }
}

// === contract, on both implementations ===

fn contract(store: &dyn Store) {
    // Clusters round-trip, replace, list by name.
    store.put_clusters(&[cluster("b")]).unwrap();
    store.put_clusters(&[cluster("a")]).unwrap();
    let mut a = cluster("a");
    a.connected = true;
    a.last_seen = Some(at(5));
    store.put_clusters(&[a.clone()]).unwrap();
    assert_eq!(store.get_cluster("a").unwrap(), Some(a.clone()));
    assert_eq!(store.get_cluster("zz").unwrap(), None);
    assert_eq!(
        store
            .list_clusters()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );

    // Operations: create at version 1, duplicate refused.
    let created = store.create_operation(&operation("op-1", "a")).unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(store.get_operation("op-1").unwrap(), Some(created.clone()));
    assert!(
        matches!(store.create_operation(&operation("op-1", "b")), Err(StoreError::Exists(id)) if id == "op-1")
    );
    store.create_operation(&operation("op-2", "b")).unwrap();
    store.create_operation(&operation("op-3", "a")).unwrap();
    let ids = |c| {
        store
            .list_operations(c)
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(None), ["op-1", "op-2", "op-3"]);
    assert_eq!(ids(Some("a")), ["op-1", "op-3"]);
    assert_eq!(ids(Some("b")), ["op-2"]);
    assert!(ids(Some("nope")).is_empty());

    // CAS: the first writer at version 1 wins, the second conflicts; store-owned fields are kept.
    let updated = store
        .update_operation("op-1", 1, &mut |op| {
            op.state = OperationState::Running;
            op.steps[0].state = StepState::Running;
            op.steps[0].attempts += 1;
            op.steps[0].started_at = Some(at(1));
            op.cluster = "hijack".into();
            op.version = 77;
        })
        .unwrap();
    assert_eq!((updated.version, updated.cluster.as_str()), (2, "a"));
    assert_eq!(store.get_operation("op-1").unwrap(), Some(updated));
    let conflict = store.update_operation("op-1", 1, &mut |op| op.state = OperationState::Failed);
    assert!(
        matches!(
            conflict,
            Err(StoreError::Conflict {
                expected: 1,
                found: 2,
                ..
            })
        ),
        "{conflict:?}"
    );
    assert_eq!(
        store.get_operation("op-1").unwrap().map(|o| o.state),
        Some(OperationState::Running)
    );
    assert!(matches!(
        store.update_operation("nope", 1, &mut |_| {}),
        Err(StoreError::NotFound(_))
    ));

    // Events: per-operation sequences, since-filter, unknown operation refused.
    for i in 1..=3 {
        assert_eq!(store.append_event("op-1", event(i)).unwrap().seq, i);
    }
    assert_eq!(store.append_event("op-2", event(9)).unwrap().seq, 1);
    let seqs = |op, since| {
        store
            .list_events(op, since)
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs("op-1", 0), [1, 2, 3]);
    assert_eq!(seqs("op-1", 2), [3]);
    assert_eq!(seqs("op-1", u64::MAX), Vec::<u64>::new());
    assert_eq!(seqs("op-2", 0), [1]);
    assert_eq!(store.list_events("op-1", 0).unwrap()[0].message, "event 1");
    assert!(matches!(
        store.append_event("nope", event(1)),
        Err(StoreError::NotFound(_))
    ));

    // Commit: the record and its events together, sequence numbers continuing; a conflict writes
    // neither.
    let (op, evs) = store
        .commit(
            "op-1",
            2,
            &mut |op| op.state = OperationState::Succeeded,
            &[event(4), event(5)],
        )
        .unwrap();
    assert_eq!((op.version, op.state), (3, OperationState::Succeeded));
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    let lost = store.commit(
        "op-1",
        2,
        &mut |op| op.state = OperationState::Failed,
        &[event(6)],
    );
    assert!(matches!(lost, Err(StoreError::Conflict { .. })), "{lost:?}");
    assert_eq!(seqs("op-1", 0), [1, 2, 3, 4, 5]);
    assert_eq!(
        store.get_operation("op-1").unwrap().map(|o| o.state),
        Some(OperationState::Succeeded)
    );
    assert!(matches!(
        store.commit("nope", 1, &mut |_| {}, &[event(1)]),
        Err(StoreError::NotFound(_))
    ));
    store.flush().unwrap();
}

fn retention(store: &dyn Store) {
    store.create_operation(&operation("op", "a")).unwrap();
    for i in 1..=12 {
        store.append_event("op", event(i)).unwrap();
    }
    let seqs: Vec<u64> = store
        .list_events("op", 0)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [8, 9, 10, 11, 12]);
}

#[test]
fn mem_contract() {
    contract(&MemStore::default());
}

#[test]
fn mem_retention() {
    retention(&MemStore::with_retention(5));
}

/// Opens the store once the previous handle has let go of the directory: sled's background
/// flusher releases its file lock shortly after the handle is dropped, as after a restart.
fn reopen(dir: &Path, opts: sled::SledOptions) -> Result<SledStore, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open_with(dir, opts.clone()) {
            Err(StoreError::Backend(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn default_opts() -> sled::SledOptions {
    sled::SledOptions {
        event_retention: DEFAULT_EVENT_RETENTION,
    }
}

#[test]
fn sled_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&SledStore::open(dir.path()).unwrap());
}

#[test]
fn sled_retention_and_sequence_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || sled::SledOptions { event_retention: 5 };
    retention(&SledStore::open_with(dir.path(), opts()).unwrap());
    let store = reopen(dir.path(), opts()).unwrap();
    assert_eq!(store.append_event("op", event(13)).unwrap().seq, 13);
    let seqs: Vec<u64> = store
        .list_events("op", 0)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [9, 10, 11, 12, 13]);
}

#[test]
fn sled_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (c, op) = {
        let store = SledStore::open(dir.path()).unwrap();
        store.put_clusters(&[cluster("a")]).unwrap();
        store.create_operation(&operation("op-1", "a")).unwrap();
        let op = store
            .update_operation("op-1", 1, &mut |op| op.steps[1].error = Some("boom".into()))
            .unwrap();
        (store.get_cluster("a").unwrap(), op)
    };
    let store = reopen(dir.path(), default_opts()).unwrap();
    assert_eq!(store.get_cluster("a").unwrap(), c);
    assert_eq!(store.get_operation("op-1").unwrap(), Some(op));
    assert_eq!(store.list_operations(Some("a")).unwrap().len(), 1);
}

#[test]
fn sled_concurrent_writers_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store.create_operation(&operation("op", "a")).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = &store;
                s.spawn(move || store.update_operation("op", 1, &mut |op| op.params = serde_json::json!(i)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| matches!(r, Err(StoreError::Conflict { .. }))));
    assert_eq!(store.get_operation("op").unwrap().unwrap().version, 2);
}

#[test]
fn sled_refuses_other_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = (0..500)
            .find_map(|_| {
                ::sled::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                })
            })
            .expect("the directory lock is released");
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", "99")
            .unwrap();
        db.flush().unwrap();
    }
    let err = reopen(dir.path(), default_opts()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Schema {
                found: 99,
                expected: SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().display().to_string()) && msg.contains("move the directory aside"),
        "{msg}"
    );
}

#[test]
fn sled_refuses_unversioned_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        db.open_tree("clusters").unwrap().insert("a", "{}").unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        reopen(dir.path(), default_opts()),
        Err(StoreError::Schema { found: 0, .. })
    ));
}

// === crash: SIGKILL a writer at an arbitrary moment; everything it acknowledged is there ===

const CRASH_DIR_ENV: &str = "FLOTILLA_STORE_CRASH_DIR";

/// The child half of [`sled_acknowledged_writes_survive_sigkill`] (which re-executes itself with
/// [`CRASH_DIR_ENV`] set): writes until killed, printing an `ack` line after each write returns.
fn crash_child(dir: &std::ffi::OsStr) {
    let store = SledStore::open(Path::new(dir)).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..1_000_000u64 {
        let id = format!("op-{i}");
        store
            .create_operation(&operation(&id, &format!("c{}", i % 3)))
            .unwrap();
        writeln!(out, "ack create {id}").unwrap();
        let op = store
            .update_operation(&id, 1, &mut |op| {
                op.state = OperationState::Running;
                op.steps[0].state = StepState::Running;
                op.steps[0].attempts = 1;
            })
            .unwrap();
        writeln!(out, "ack update {id} {}", op.version).unwrap();
        let e = store.append_event(&id, event(i)).unwrap();
        writeln!(out, "ack event {id} {}", e.seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sled_acknowledged_writes_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
        return crash_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::sled_acknowledged_writes_survive_sigkill",
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
    // Kill mid-stream, after some progress (an odd count, so usually between two writes of one operation).
    while acks.len() < 301 {
        match lines.next() {
            Some(line) => {
                let line = line.unwrap();
                if line.starts_with("ack ") {
                    acks.push(line);
                }
            }
            None => panic!("child exited early after {} acks", acks.len()),
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already in the pipe were acknowledged too.
    acks.extend(lines.map_while(Result::ok).filter(|l| l.starts_with("ack ")));

    let store = SledStore::open(dir.path()).unwrap();
    for ack in &acks {
        let parts: Vec<&str> = ack.split(' ').collect();
        match parts.as_slice() {
            ["ack", "create", id] => assert!(store.get_operation(id).unwrap().is_some(), "lost {ack}"),
            ["ack", "update", id, v] => {
                let op = store
                    .get_operation(id)
                    .unwrap()
                    .unwrap_or_else(|| panic!("lost {ack}"));
                assert_eq!(op.version.to_string(), *v, "lost {ack}");
                assert_eq!(op.steps[0].attempts, 1);
            }
            ["ack", "event", id, seq] => {
                let seqs: Vec<String> = store
                    .list_events(id, 0)
                    .unwrap()
                    .iter()
                    .map(|e| e.seq.to_string())
                    .collect();
                assert_eq!(seqs, [*seq], "lost {ack}");
            }
            _ => panic!("unexpected line {ack}"),
        }
    }
    // The store stays writable and consistent: the next operation id is free or fully created.
    let created = acks.iter().filter(|a| a.starts_with("ack create")).count();
    assert!(store.list_operations(None).unwrap().len() >= created);
}
