//! temporary smoke
use flotilla_sim::fleet::*;
use flotilla_sim::object::Object;
#[tokio::main]
async fn main() {
    let ns = |n: &str| {
        Object::Namespace(k8s_openapi::api::core::v1::Namespace {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(n.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    };
    let seeds = vec![ClusterSeed {
        name: "sim-1".into(),
        minor: "33".into(),
        objects: vec![ns("default"), ns("shop")],
        behaviour: Default::default(),
    }];
    let f = Fleet::start(seeds, FleetOptions::default()).await.unwrap();
    f.write_files(std::path::Path::new("/tmp/fleet")).unwrap();
    eprintln!("ready {}", f.server_url);
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
}
