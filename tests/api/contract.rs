//! The router and `openapi.yaml` describe the same routes, in both directions.

use std::collections::BTreeSet;

use exchange_simulator::DEMO;
use mailbox_gateway::api::{route_table, OPENAPI_YAML};
use yaml_rust2::YamlLoader;

use crate::helpers::spawn_app;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

fn spec_operations() -> BTreeSet<(String, String)> {
    let docs = YamlLoader::load_from_str(OPENAPI_YAML).expect("openapi.yaml is YAML");
    let spec = &docs[0];
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let paths = spec["paths"].as_hash().expect("openapi.yaml has paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if !item[method].is_badvalue() {
                operations.insert((method.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    operations
}

#[test]
fn every_route_is_in_openapi_yaml_and_every_operation_is_routed() {
    let routed: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    let described = spec_operations();
    let undocumented: Vec<_> = routed.difference(&described).collect();
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "operations in openapi.yaml with no route: {unrouted:?}"
    );
}

#[tokio::test]
async fn every_described_operation_answers_and_other_methods_are_405() {
    let app = spawn_app().await;
    let operations = spec_operations();
    let paths: BTreeSet<&String> = operations.iter().map(|(_, path)| path).collect();
    for path in paths {
        let concrete = path
            .replace("{mailbox}", DEMO.mailbox_address)
            .replace("{folder}", "inbox")
            .replace("{itemId}", "AAMkAGI2TG93AAA%3D");
        for method in METHODS.iter().filter(|m| **m != "head" && **m != "options") {
            let method_name = method.to_uppercase();
            let response = app
                .client
                .request(method_name.parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|problem| problem["code"].as_str().map(str::to_owned));
            if operations.contains(&(method_name.clone(), path.clone())) {
                assert!(
                    !matches!(
                        code.as_deref(),
                        Some("route_not_found" | "method_not_allowed")
                    ),
                    "{method_name} {path} is described but not routed: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method_name} {path} is routed but not described: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_spec_is_served_at_openapi_yaml() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    assert_eq!(response.text().await.unwrap(), OPENAPI_YAML);
}
