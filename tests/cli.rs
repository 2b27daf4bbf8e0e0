//! The binary itself: start-up failures, `serve --simulate` and its curl line, and `simulator`.

use std::process::Stdio;
use std::time::Duration;

use exchange_simulator::DEMO;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_mailbox-gateway");

/// The binary with an empty environment, so no setting of the machine leaks in.
fn gateway(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Reads the child's stdout until a line contains `needle`, and returns everything read so far.
async fn read_until(child: &mut Child, needle: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no line with {needle:?} in:\n{seen}");
    seen
}

#[tokio::test]
async fn serve_without_a_credential_exits_non_zero_naming_the_variables_and_simulate() {
    let output = gateway(&["serve", "--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needed in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "--simulate",
    ] {
        assert!(stderr.contains(needed), "{needed} missing from: {stderr}");
    }
}

#[tokio::test]
async fn serve_refuses_to_listen_beyond_loopback_without_client_authentication() {
    let output = gateway(&["serve", "--listen", "0.0.0.0:0"])
        .env("AZURE_TENANT_ID", DEMO.tenant_id)
        .env("AZURE_CLIENT_ID", DEMO.client_id)
        .env("AZURE_CLIENT_SECRET", "not-used")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("without client authentication")
            && stderr.contains("MAILBOX_GATEWAY_AUTH=api-key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_invalid_setting_stops_start_up_with_its_name() {
    let output = gateway(&["serve", "--simulate", "--listen", "127.0.0.1:0"])
        .env("MAILBOX_GATEWAY_MAX_ITEM_BYTES", "lots")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MAILBOX_GATEWAY_MAX_ITEM_BYTES"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_simulate_prints_a_curl_line_that_imports_the_sample_item() {
    let mut child = gateway(&["serve", "--simulate", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let printed = read_until(&mut child, "curl ").await;
    let curl = printed.lines().find(|l| l.contains("curl ")).unwrap();
    let file = curl
        .split("--data-binary @")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let url = curl.split_whitespace().last().unwrap();
    assert!(
        url.ends_with(&format!(
            "/v1/mailboxes/{}/folders/inbox/items",
            DEMO.mailbox_address
        )),
        "{url}"
    );

    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(std::fs::read(file).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The audit event comes out on stdout, one JSON object per line, apart from the debug log.
    let audit = read_until(&mut child, "\"sha256\"").await;
    let event: serde_json::Value =
        serde_json::from_str(audit.lines().find(|l| l.contains("sha256")).unwrap()).unwrap();
    assert_eq!(event["target"], "audit");
    assert_eq!(event["client"], "anonymous");
    assert_eq!(event["mode"], "create");
    assert_eq!(event["status"], 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["itemId"].is_string() && body["changeKey"].is_string(),
        "{body}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_simulator_command_prints_working_demo_credentials() {
    let mut child = gateway(&["simulator", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let printed = read_until(&mut child, "Demo mailbox").await;
    let setting = |key: &str| {
        printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} not printed:\n{printed}"))
            .to_owned()
    };
    assert_eq!(setting("AZURE_CLIENT_ID"), DEMO.client_id);
    let token_url = format!(
        "{}/{}/oauth2/v2.0/token",
        setting("AZURE_AUTHORITY_HOST"),
        setting("AZURE_TENANT_ID")
    );
    let response = reqwest::Client::new()
        .post(token_url)
        .form(&[
            ("client_id", setting("AZURE_CLIENT_ID")),
            ("client_secret", setting("AZURE_CLIENT_SECRET")),
            ("scope", "https://graph.microsoft.com/.default".to_owned()),
            ("grant_type", "client_credentials".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn serve_help_lists_every_setting_and_points_to_the_reference() {
    let output = gateway(&["serve", "--help"]).output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("docs/configuration.md"), "{help}");
    for (key, _) in mailbox_gateway::config::KEYS {
        assert!(help.contains(key), "{key} missing from serve --help");
    }
}
