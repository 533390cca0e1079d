//! kube-rs (the client the agent uses) against the simulator: lists, selectors, watches,
//! patches, the scale subresource, evictions and the error answers a real server gives.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};

use common::{client, fleet, fleet_with};
use flotilla_sim::fleet::FleetOptions;
use flotilla_sim::scenario::Scenario;

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn lists_with_label_and_field_selectors() {
    let (_f, dir) = fleet(1).await;
    let c = client(&dir, "sim-1").await;
    let nodes: Api<Node> = Api::all(c.clone());
    let ng = nodes
        .list(&ListParams::default().labels("alpha.eksctl.io/nodegroup-name=ng-old"))
        .await
        .expect("list");
    assert_eq!(ng.items.len(), 4);
    for n in &ng.items {
        let info = n
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .expect("nodeInfo");
        assert!(
            info.kubelet_version.starts_with("v1.33."),
            "{}",
            info.kubelet_version
        );
    }
    let node = ng.items[0].metadata.name.clone().expect("name");
    let pods: Api<Pod> = Api::all(c.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .expect("list");
    assert!(!on_node.items.is_empty());
    assert!(on_node
        .items
        .iter()
        .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())));
    let all = pods.list(&ListParams::default()).await.expect("list").items.len();
    // Paged lists (kube-rs' watcher pages by 500; here by 3) return everything exactly once.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = pods.list(&lp).await.expect("page");
        seen.extend(page.items.iter().filter_map(|p| p.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen.len(), all);
    // Unsupported field and malformed label selectors are 400s, as on a real server.
    let err = api_error(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("field label not supported: spec.bogus"),
        "{}",
        err.message
    );
    let err = api_error(
        pods.list(&ListParams::default().labels("app in (web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn watcher_sees_scale_up_and_scale_subresource_works() {
    let (_f, dir) = fleet(1).await;
    let c = client(&dir, "sim-1").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "shop");
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "shop");
    let stream = watcher(pods.clone(), watcher::Config::default().labels("app=web")).applied_objects();
    let patch = serde_json::json!({"spec": {"replicas": 6}});
    let scale = deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(6));
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        let mut stream = std::pin::pin!(stream);
        let mut ready = std::collections::BTreeSet::new();
        while let Some(p) = stream.try_next().await.expect("watch") {
            let is_ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let name = p.metadata.name.clone().unwrap_or_default();
            if is_ready && p.metadata.deletion_timestamp.is_none() {
                ready.insert(name);
            } else {
                ready.remove(&name);
            }
            if ready.len() == 6 {
                return ready;
            }
        }
        ready
    })
    .await
    .expect("six ready web pods seen through the watcher");
    assert_eq!(ready.len(), 6);
    let d = deploys.get("web").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(6));
    let got = deploys.get_scale("web").await.expect("get scale");
    assert_eq!(got.status.map(|s| s.selector), Some(Some("app=web".into())));
}

#[tokio::test]
async fn eviction_respects_pdb_and_names_it() {
    let (f, dir) = fleet(1).await;
    let c = client(&dir, "sim-1").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "shop");
    let cache = pods
        .list(&ListParams::default().labels("app=cache"))
        .await
        .expect("list")
        .items;
    let name = cache[0].metadata.name.clone().expect("name");
    let err = api_error(pods.evict(&name, &EvictParams::default()).await.unwrap_err());
    assert_eq!(err.code, 429);
    assert_eq!(err.reason, "TooManyRequests");
    assert_eq!(
        err.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    // The cause names the PDB and its numbers, as a real server's does.
    let causes = err.details.map(|d| d.causes).unwrap_or_default();
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert_eq!(
        causes[0].message,
        "The disruption budget cache needs 1 healthy pods and has 1 currently"
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), "shop");
    let web_pdb = pdbs.get("web").await.expect("pdb");
    let st = web_pdb.status.expect("status");
    assert_eq!(
        (
            st.current_healthy,
            st.desired_healthy,
            st.disruptions_allowed,
            st.expected_pods
        ),
        (4, 3, 1, 4)
    );
    // web allows one disruption: the first eviction passes, the next is refused until a
    // replacement is Ready.
    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list")
        .items;
    pods.evict(
        web[0].metadata.name.as_deref().expect("name"),
        &EvictParams::default(),
    )
    .await
    .expect("first eviction allowed");
    let second = pods
        .evict(
            web[1].metadata.name.as_deref().expect("name"),
            &EvictParams::default(),
        )
        .await;
    assert_eq!(api_error(second.unwrap_err()).code, 429);
    let stats = f.cluster("sim-1").expect("sim-1").lock().stats().stats().clone();
    assert_eq!(stats.evictions_allowed, 1);
    assert!(stats.evictions_refused >= 2);
    assert_eq!(stats.pdb_violations, 0);
}

#[tokio::test]
async fn writes_conflict_on_stale_resource_version_and_patches_apply() {
    let (_f, dir) = fleet(1).await;
    let c = client(&dir, "sim-1").await;
    let nodes: Api<Node> = Api::all(c.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .remove(0);
    let name = node.metadata.name.clone().expect("name");
    // Strategic merge patch, as kubectl taint sends: taints replaced as a whole.
    let patch =
        serde_json::json!({"spec": {"taints": [{"key": "flotilla.io/migrating", "effect": "NoSchedule"}]}});
    let patched = nodes
        .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch");
    let taints = patched.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(taints.iter().any(|t| t.key == "flotilla.io/migrating"));
    // A replace carrying the old resourceVersion is refused with 409.
    let mut stale = node.clone();
    stale
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("x".into(), "y".into());
    let err = api_error(
        nodes
            .replace(&name, &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    // JSON patch with a failing test op changes nothing.
    let jp: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/name", "value": "other"},
        {"op": "add", "path": "/metadata/labels/z", "value": "1"}
    ]))
    .expect("patch");
    assert!(nodes
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .is_err());
    let after = nodes.get(&name).await.expect("get");
    assert!(!after.metadata.labels.unwrap_or_default().contains_key("z"));
    // Missing objects are 404 with the real message.
    let err = api_error(nodes.get("nope").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "nodes \"nope\" not found");
}

#[tokio::test]
async fn watch_from_compacted_version_is_gone() {
    let opts = FleetOptions {
        watch_history: 5,
        ..Default::default()
    };
    let (_f, dir) = fleet_with(Scenario::default_scenario(), 1, opts).await;
    let c = client(&dir, "sim-1").await;
    let pods: Api<Pod> = Api::all(c);
    let mut stream = pods
        .watch(&WatchParams::default(), "2")
        .await
        .expect("watch opens")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event")
    {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // A fresh list+watch (what kube-rs' watcher does after 410) works and gets bookmarks.
    let list = pods.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let s = pods
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .expect("watch");
    let events: Vec<_> = s.collect().await;
    assert!(events.iter().all(|e| e.is_ok()), "{events:?}");
}

#[tokio::test]
async fn faults_change_at_run_time() {
    let (f, dir) = fleet(1).await;
    let c = client(&dir, "sim-1").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "shop");
    let url = f.stats_url.clone();
    let put = |body: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || common::stats_http(&url, "PUT", "/clusters/sim-1/faults", body))
    };
    // Every call fails with 503 while the error rate is 1.0.
    let (code, body) = put(r#"{"apiErrorRate": 1.0}"#).await.expect("put");
    assert_eq!(code, 200, "{body}");
    let err = api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));
    // Pods of web never become Ready once the fault is on; the rest of the API answers again.
    let (code, body) = put(r#"{"neverReady": [{"namespace": "shop", "deployment": "web"}]}"#)
        .await
        .expect("put");
    assert_eq!(code, 200, "{body}");
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "shop");
    let patch = serde_json::json!({"spec": {"replicas": 5}});
    deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = deploys.get("web").await.expect("get");
    let st = d.status.expect("status");
    assert_eq!(
        (st.replicas, st.available_replicas),
        (Some(5), Some(4)),
        "the fifth pod stays unready"
    );
    // Bad input names the field and changes nothing.
    let (code, body) = put(r#"{"neverReady": [{"namespace": "shop", "deployment": "nope"}]}"#)
        .await
        .expect("put");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("faults.neverReady[0]") && body.contains("shop/nope"),
        "{body}"
    );
    let (code, body) = put(r#"{"apiErrorRate": "high"}"#).await.expect("put");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("faults.apiErrorRate"), "{body}");
    assert_eq!(
        f.cluster("sim-1").expect("sim-1").behaviour().never_ready.len(),
        1
    );
}

#[tokio::test]
async fn streaming_list_watch_and_bookmarks() {
    let (_f, dir) = fleet(1).await;
    let c = client(&dir, "sim-1").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "shop");
    // sendInitialEvents: every pod as ADDED, then a BOOKMARK marking the end of the initial events.
    let s = pods
        .watch(&WatchParams::streaming_lists().timeout(7), "")
        .await
        .expect("watch");
    let events: Vec<_> = s.collect().await;
    let added = events
        .iter()
        .filter(|e| matches!(e, Ok(WatchEvent::Added(_))))
        .count();
    let want = pods.list(&ListParams::default()).await.expect("list").items.len();
    assert_eq!(added, want, "{events:?}");
    let marks: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Ok(WatchEvent::Bookmark(b)) => {
                Some(b.metadata.annotations.contains_key("k8s.io/initial-events-end"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        marks.first(),
        Some(&true),
        "first bookmark ends the initial events: {marks:?}"
    );
    assert!(
        marks.len() >= 2,
        "periodic bookmarks follow within the 7 s: {marks:?}"
    );
    // kube-rs' watcher in streaming-list mode gets the same objects.
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        watcher(pods.clone(), watcher::Config::default().streaming_lists())
            .applied_objects()
            .take(want)
            .count(),
    )
    .await
    .expect("watcher delivers the initial objects");
    assert_eq!(seen, want);
}

#[tokio::test]
async fn malformed_requests_get_status_answers() {
    let (_f, dir) = fleet(1).await;
    let c = client(&dir, "sim-1").await;
    let send = |method: &str, path: &str, ct: &str, body: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body.as_bytes().to_vec())
            .expect("request");
        let c = c.clone();
        async move {
            match c.request_text(req).await {
                Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
                other => panic!("expected a Status error, got {other:?}"),
            }
        }
    };
    let (code, reason, msg) = send(
        "POST",
        "/api/v1/namespaces/shop/pods",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!((code, reason.as_str()), (400, "BadRequest"), "{msg}");
    let (code, reason, _) = send("GET", "/api/v1/namespaces/shop/widgets", "application/json", "").await;
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, reason, _) = send("PUT", "/api/v1/namespaces/shop/pods", "application/json", "{}").await;
    assert_eq!((code, reason.as_str()), (405, "MethodNotAllowed"));
    let (code, reason, _) = send(
        "PATCH",
        "/api/v1/namespaces/shop/pods/debug-shell",
        "application/vnd.kubernetes.protobuf",
        "x",
    )
    .await;
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
    let (code, reason, msg) = send(
        "POST",
        "/apis/apps/v1/namespaces/shop/deployments",
        "application/json",
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"bad"},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"x"}},"template":{"metadata":{"labels":{"app":"y"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#,
    )
    .await;
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.contains("spec.template.metadata.labels") && msg.contains("does not match"),
        "{msg}"
    );
    let (code, reason, msg) = send(
        "POST",
        "/api/v1/namespaces/nowhere/pods",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
    )
    .await;
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (404, "NotFound", "namespaces \"nowhere\" not found")
    );
    let (code, reason, _) = send(
        "GET",
        "/api/v1/pods?watch=true&resourceVersion=abc",
        "application/json",
        "",
    )
    .await;
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let (code, _, msg) = send("GET", "/api/v1/pods?limit=ten", "application/json", "").await;
    assert_eq!(code, 400, "{msg}");
}

/// Touches every pod `rounds` times in one burst (more changes than the live feed buffers).
fn burst(f: &flotilla_sim::fleet::Fleet, rounds: usize) -> usize {
    use flotilla_sim::object::Object;
    use flotilla_sim::resources::Kind;
    f.cluster("sim-1").expect("sim-1").write(|s| {
        let pods: Vec<Object> = s.list(Kind::Pod, None).map(|e| (*e.obj).clone()).collect();
        for round in 0..rounds {
            for p in &pods {
                let mut p = p.clone();
                p.meta_mut()
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert("burst".into(), round.to_string());
                s.replace(p);
            }
        }
        pods.len() * rounds
    })
}

#[tokio::test]
async fn slow_watchers_catch_up_from_history_or_get_410() {
    let opts = FleetOptions {
        watch_history: 10_000,
        ..Default::default()
    };
    let (f, dir) = fleet_with(Scenario::default_scenario(), 1, opts).await;
    let pods: Api<Pod> = Api::all(client(&dir, "sim-1").await);
    let rv = pods
        .list(&ListParams::default().limit(1))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let s = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .expect("watch");
    let sent = burst(&f, 100);
    assert!(
        sent > 2000,
        "the burst must exceed the live buffer of 1024: {sent}"
    );
    let events: Vec<_> = s.collect().await;
    let modified = events
        .iter()
        .filter(|e| matches!(e, Ok(WatchEvent::Modified(_))))
        .count();
    assert_eq!(modified, sent, "every change delivered exactly once");

    let opts = FleetOptions {
        watch_history: 100,
        ..Default::default()
    };
    let (f, dir) = fleet_with(Scenario::default_scenario(), 1, opts).await;
    let pods: Api<Pod> = Api::all(client(&dir, "sim-1").await);
    let rv = pods
        .list(&ListParams::default().limit(1))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let s = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .expect("watch");
    burst(&f, 100);
    let events: Vec<_> = s.collect().await;
    let gone = events.iter().any(|e| match e {
        Ok(WatchEvent::Error(s)) => s.code == 410,
        Err(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    });
    assert!(gone, "past the history the watcher is told 410 Gone");
}
