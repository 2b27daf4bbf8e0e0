//! `mailbox-gateway restore` and `export` run as processes against a gateway and the simulator on
//! loopback: items restored exactly once across re-runs, kills and retries, reports and journals, a
//! folder exported and checked.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use exchange_simulator::{Fault, FaultTarget, DEMO};
use helpers::{item, spawn_app, spawn_app_with, AppOptions, TestApp};
use mailbox_gateway::access::parse_rules;
use mailbox_gateway::config::{AccessConfig, AuthConfig};
use sha2::{Digest, Sha256};
use tokio::process::Command;

fn gateway_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailbox-gateway"));
    command
        .args(args)
        .env_remove("MAILBOX_GATEWAY_API_KEY")
        .kill_on_drop(true);
    command
}

async fn run(args: &[&str]) -> Output {
    gateway_command(args).output().await.unwrap()
}

/// Writes `count` distinct items as `.fts` files into `dir` (in a nested directory too); returns them.
fn write_items(dir: &Path, count: usize, prefix: &str) -> Vec<Vec<u8>> {
    let nested = dir.join("nested/deeper");
    std::fs::create_dir_all(&nested).unwrap();
    (0..count)
        .map(|n| {
            let data = item(&format!("{prefix} {n}"));
            let target = if n % 2 == 0 { dir } else { &nested };
            std::fs::write(target.join(format!("{prefix}-{n:03}.fts")), &data).unwrap();
            data
        })
        .collect()
}

fn restore_args<'a>(app: &'a TestApp, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "restore",
        "--gateway",
        &app.address,
        "--mailbox",
        DEMO.mailbox_address,
        "--folder",
        "inbox",
    ];
    args.extend_from_slice(extra);
    args
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The SHA-256 of every item the demo mailbox holds, sorted.
fn stored(app: &TestApp) -> Vec<String> {
    let mut digests: Vec<String> = app
        .simulator
        .items(DEMO.mailbox_id)
        .iter()
        .map(|i| hex::encode(i.sha256))
        .collect();
    digests.sort();
    digests
}

fn digests(items: &[Vec<u8>]) -> Vec<String> {
    let mut digests: Vec<String> = items
        .iter()
        .map(|i| hex::encode(Sha256::digest(i)))
        .collect();
    digests.sort();
    digests
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_directory_is_restored_once_and_re_runs_create_nothing_with_or_without_the_journal() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let items = write_items(dir.path(), 7, "Restored");
    let (journal, report_path) = (dir.path().join("journal"), dir.path().join("report.json"));
    let source = dir.path().to_str().unwrap();
    let (journal_arg, report_arg) = (journal.to_str().unwrap(), report_path.to_str().unwrap());

    let output = run(&restore_args(
        &app,
        &["--journal", journal_arg, "--report", report_arg, source],
    ))
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let first = report(&report_path);
    assert_eq!(first["created"], 7, "{first}");
    assert_eq!(first["failed"], 0);
    assert_eq!(first["items"].as_array().unwrap().len(), 7);
    for entry in first["items"].as_array().unwrap() {
        assert_eq!(entry["outcome"], "created");
        assert!(entry["itemId"].is_string() && entry["changeKey"].is_string());
        assert!(entry["path"].as_str().unwrap().ends_with(".fts"));
    }
    assert_eq!(stored(&app), digests(&items));
    assert!(String::from_utf8_lossy(&output.stderr).contains("7 created"));

    // Again with the journal: nothing is sent.
    let imports = app.counters().import_requests;
    let output = run(&restore_args(
        &app,
        &["--journal", journal_arg, "--report", report_arg, source],
    ))
    .await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(report(&report_path)["skipped"], 7);
    assert_eq!(
        app.counters().import_requests,
        imports,
        "the journal skipped them"
    );

    // Again without it: the gateway remembers the keys and replays; nothing is created twice.
    let output = run(&restore_args(&app, &["--report", report_arg, source])).await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(report(&report_path)["skipped"], 7);
    assert_eq!(stored(&app), digests(&items));
    assert_eq!(app.counters().items_created, 7);
}

#[tokio::test]
async fn a_folder_export_round_trips_through_the_export_and_restore_commands() {
    let app = spawn_app().await;
    let originals: Vec<Vec<u8>> = (0..5).map(|n| item(&format!("Exported {n}"))).collect();
    for data in &originals {
        assert_eq!(
            app.create(DEMO.mailbox_id, "drafts", data.clone())
                .await
                .status(),
            201
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (tar, out_dir) = (dir.path().join("drafts.tar"), dir.path().join("drafts"));
    for out in [&tar, &out_dir] {
        let output = run(&[
            "export",
            "--gateway",
            &app.address,
            "--mailbox",
            DEMO.mailbox_id,
            "--folder",
            "drafts",
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
        assert!(output.status.success(), "{}", text(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("exported 5 items"));
    }
    assert!(tar.is_file() && !dir.path().join("drafts.tar.partial").exists());
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fts"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    files.sort();
    let mut expected = originals.clone();
    expected.sort();
    assert_eq!(files, expected);
    assert!(out_dir.join("index.json").is_file());

    // The tar restores into the inbox: the same bytes.
    let report_path = dir.path().join("report.json");
    let output = run(&restore_args(
        &app,
        &[
            "--report",
            report_path.to_str().unwrap(),
            tar.to_str().unwrap(),
        ],
    ))
    .await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(report(&report_path)["created"], 5);
    let inbox = app.simulator.folder_id(DEMO.mailbox_id, "inbox").unwrap();
    let mut restored: Vec<Vec<u8>> = app
        .simulator
        .items(DEMO.mailbox_id)
        .into_iter()
        .filter(|i| i.folder_id == inbox)
        .map(|i| i.data.to_vec())
        .collect();
    restored.sort();
    assert_eq!(restored, expected);
}

#[tokio::test]
async fn a_broken_stream_is_reported_with_its_offset_and_not_sent() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    write_items(dir.path(), 2, "Fine");
    let mut broken = item("Broken");
    broken.truncate(broken.len() - 3);
    let broken_path = dir.path().join("broken.fts");
    std::fs::write(&broken_path, &broken).unwrap();
    let report_path = dir.path().join("report.json");
    let output = run(&restore_args(
        &app,
        &[
            "--report",
            report_path.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = report(&report_path);
    assert_eq!(
        (report["created"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(1))
    );
    let failed = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["outcome"] == "failed")
        .unwrap();
    assert_eq!(failed["path"], broken_path.to_str().unwrap());
    assert!(
        failed["error"].as_str().unwrap().contains("at byte"),
        "{failed}"
    );
    assert_eq!(
        app.counters().import_requests,
        2,
        "the broken one was not sent"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("broken.fts"));
}

#[tokio::test]
async fn a_dry_run_checks_everything_and_sends_nothing() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    write_items(dir.path(), 3, "Dry");
    let report_path = dir.path().join("report.json");
    let output = run(&restore_args(
        &app,
        &[
            "--dry-run",
            "--report",
            report_path.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    ))
    .await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(report(&report_path)["items"].as_array().unwrap().len(), 3);
    assert_eq!(app.counters().import_requests, 0);
    assert!(String::from_utf8_lossy(&output.stderr).contains("the target folder exists"));

    // A folder that does not exist fails the dry run.
    let output = run(&[
        "restore",
        "--gateway",
        &app.address,
        "--mailbox",
        DEMO.mailbox_id,
        "--folder",
        "AAMkAGZmZmZmZmZmZmZmZmZm",
        "--dry-run",
        dir.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("folder_not_found"));
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        vec![
            "restore",
            "--gateway",
            "http://127.0.0.1:1",
            "--mailbox",
            "x@y.z",
            "--folder",
            "inbox",
        ],
        vec![
            "restore",
            "--gateway",
            "http://127.0.0.1:1",
            "--mailbox",
            "not a mailbox",
            "--folder",
            "inbox",
            ".",
        ],
        vec![
            "restore",
            "--gateway",
            "http://127.0.0.1:1",
            "--mailbox",
            "x@y.z",
            "--folder",
            "inbox",
            "/does/not/exist",
        ],
        vec![
            "export",
            "--gateway",
            "http://127.0.0.1:1",
            "--mailbox",
            "x@y.z",
            "--folder",
            "inbox",
        ],
    ] {
        let output = run(&args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
    }
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after_and_outcome_unknown_is_never_resent_blindly() {
    let app = spawn_app_with(AppOptions {
        retry: mailbox_gateway::config::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        },
        ..AppOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let items = write_items(dir.path(), 4, "Throttled");
    // The first two imports are throttled (the gateway gives up at once and answers 503).
    app.simulator.inject(
        FaultTarget::Import,
        Fault::Status {
            status: 429,
            retry_after: Some(1),
            code: None,
        },
        2,
    );
    let report_path = dir.path().join("report.json");
    let journal = dir.path().join("journal");
    let args = [
        "--concurrency",
        "1",
        "--journal",
        journal.to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ];
    let output = run(&restore_args(&app, &args)).await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(report(&report_path)["created"], 4);
    assert_eq!(stored(&app), digests(&items));

    // An import whose answer is lost: outcome unknown, reported, and not sent again by a re-run.
    let more = tempfile::tempdir().unwrap();
    write_items(more.path(), 1, "Lost answer");
    app.simulator
        .inject(FaultTarget::Import, Fault::DropAfterHandling, 1);
    let args = [
        "--journal",
        journal.to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
        more.path().to_str().unwrap(),
    ];
    let output = run(&restore_args(&app, &args)).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(report(&report_path)["outcomeUnknown"], 1);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--retry-unknown"));
    let imports = app.counters().import_requests;
    let output = run(&restore_args(&app, &args)).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(report(&report_path)["outcomeUnknown"], 1);
    assert_eq!(app.counters().import_requests, imports, "not sent again");
    assert_eq!(app.simulator.items(DEMO.mailbox_id).len(), 5, "stored once");
}

#[tokio::test]
async fn a_restore_killed_midway_and_started_again_leaves_every_item_exactly_once() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let items = write_items(dir.path(), 60, "Killed");
    let journal = dir.path().join("journal");
    let args = restore_args(
        &app,
        &[
            "--concurrency",
            "4",
            "--journal",
            journal.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    );
    let mut child = gateway_command(&args).spawn().unwrap();
    let start = tokio::time::Instant::now();
    while app.simulator.items(DEMO.mailbox_id).len() < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the restore made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let before = app.simulator.items(DEMO.mailbox_id).len();
    assert!(before < 60, "killed before the end ({before} stored)");

    let output = run(&args).await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(stored(&app), digests(&items), "every item exactly once");
    assert_eq!(app.counters().duplicate_items, 0);
}

#[tokio::test]
async fn the_api_key_comes_from_a_file_or_the_environment_and_is_never_printed() {
    let key = "restore-client-key-never-printed";
    let app = spawn_app_with(AppOptions {
        access: AccessConfig {
            auth: AuthConfig::ApiKeys(vec![(
                "restorer".into(),
                Sha256::digest(key.as_bytes()).into(),
            )]),
            rules: parse_rules(
                r#"[{"client":"restorer","mailboxes":["*"],"operations":["create"]}]"#,
            )
            .unwrap(),
        },
        bearer: Some(key.into()),
        ..AppOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_items(dir.path(), 1, "Keyed");
    let key_file: PathBuf = dir.path().join("key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let source = dir.path().join("Keyed-000.fts");

    let from_file = run(&restore_args(
        &app,
        &[
            "--api-key-file",
            key_file.to_str().unwrap(),
            source.to_str().unwrap(),
        ],
    ))
    .await;
    assert!(from_file.status.success(), "{}", text(&from_file));
    let from_env = gateway_command(&restore_args(&app, &[source.to_str().unwrap()]))
        .env("MAILBOX_GATEWAY_API_KEY", key)
        .output()
        .await
        .unwrap();
    assert!(from_env.status.success(), "{}", text(&from_env));
    // Without a key: the gateway refuses, and the command says so per item.
    let without = run(&restore_args(&app, &[source.to_str().unwrap()])).await;
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stderr).contains("unauthenticated"));
    for output in [&from_file, &from_env, &without] {
        assert!(!text(output).contains(key));
    }
}
