//! The load generator of `./bench/run`: sends the same items at the same concurrency to the
//! simulator's sink over three paths (straight to the importUrl, through nginx, through the gateway)
//! and measures each cell: items/s, MB/s, latency, and the CPU and peak RSS of the process in the
//! middle.
//!
//! `bench/run` starts the processes and passes their URLs and PIDs in `BENCH_*` variables (listed in
//! `bench/README.md`); this program only talks to them over loopback and reads `/proc`. Two
//! sub-commands:
//!
//! - `bench run`: the benchmark; prints the tables and writes them to `BENCH_RESULTS`.
//! - `bench free-ports N`: prints `N` loopback ports that were free a moment ago, for the script.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use exchange_simulator::DEMO;
use mailbox_gateway::fts::synthetic_item;
use reqwest::header::CONTENT_TYPE;
use reqwest::Client;
use serde_json::Value;
use tokio::time::Instant;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// MB/s are decimal megabytes, as network figures usually are.
const MB: f64 = 1e6;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("free-ports") => {
            let count: usize = args.get(1).map_or(Ok(1), |n| n.parse())?;
            free_ports(count)
        }
        Some("run") | None => {
            let settings = Settings::from_env()?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.client_threads)
                .enable_all()
                .build()?
                .block_on(run(settings))
        }
        Some(other) => bail!("unknown sub-command {other:?}; expected `run` or `free-ports N`"),
    }
}

/// Binds `count` listeners at once (so the ports differ), prints their ports and lets them go.
fn free_ports(count: usize) -> anyhow::Result<()> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    for listener in &listeners {
        println!("{}", listener.local_addr()?.port());
    }
    Ok(())
}

/// One way to the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Pre-encoded importItem JSON straight to the simulator's importUrl.
    Direct,
    /// The same JSON to the same path and query, on nginx's origin.
    Nginx,
    /// The raw item to the gateway's `POST /v1/mailboxes/{mailbox}/folders/inbox/items`.
    Gateway,
    /// The same, to a second gateway that keeps its state in a Valkey/Redis store.
    GatewayShared,
}

impl Route {
    fn parse(name: &str) -> anyhow::Result<Route> {
        Ok(match name.trim() {
            "direct" => Route::Direct,
            "nginx" => Route::Nginx,
            "gateway" => Route::Gateway,
            "gateway-shared" => Route::GatewayShared,
            other => bail!(
                "unknown path {other:?} in BENCH_PATHS (direct, nginx, gateway, gateway-shared)"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Nginx => "nginx",
            Route::Gateway => "gateway",
            Route::GatewayShared => "gateway-shared",
        }
    }
}

/// What `bench/run` tells the generator, from `BENCH_*` variables.
struct Settings {
    sim_url: String,
    nginx_url: Option<String>,
    gateway_url: Option<String>,
    gateway_shared_url: Option<String>,
    sim_pid: Option<u32>,
    nginx_pid: Option<u32>,
    gateway_pid: Option<u32>,
    gateway_shared_pid: Option<u32>,
    /// The Valkey/Redis server of the shared gateway.
    store_pid: Option<u32>,
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    mailboxes: usize,
    sizes: Vec<usize>,
    large_size: usize,
    large_reps: usize,
    /// Times each size's paths are measured in turn.
    rounds: usize,
    routes: Vec<Route>,
    distinct_items: usize,
    client_threads: usize,
    clk_tck: f64,
    results: Option<PathBuf>,
    command: String,
    notes: Vec<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn parsed<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}={value:?}: {error}")),
    }
}

/// `4096`, `4KiB`, `64KiB`, `1MiB`, `100MiB` (binary units; `K`/`M` alone mean the same).
fn parse_size(text: &str) -> anyhow::Result<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .with_context(|| format!("size {text:?} has no number"))?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        other => bail!("size {text:?} has an unknown unit {other:?} (KiB or MiB)"),
    };
    Ok(number * unit)
}

fn size_label(size: usize) -> String {
    if size >= MIB && size % MIB == 0 {
        format!("{} MiB", size / MIB)
    } else if size >= KIB && size % KIB == 0 {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let pid = |name: &str| -> anyhow::Result<Option<u32>> {
            var(name)
                .map(|value| value.trim().parse().with_context(|| name.to_owned()))
                .transpose()
        };
        let sizes = var("BENCH_SIZES")
            .unwrap_or_else(|| "4KiB,64KiB,1MiB".to_owned())
            .split(',')
            .filter(|size| !size.trim().is_empty())
            .map(parse_size)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let routes = var("BENCH_PATHS")
            .unwrap_or_else(|| "direct,nginx,gateway".to_owned())
            .split(',')
            .map(Route::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let settings = Settings {
            sim_url: var("BENCH_SIM_URL").context("BENCH_SIM_URL is not set (run ./bench/run)")?,
            nginx_url: var("BENCH_NGINX_URL"),
            gateway_url: var("BENCH_GATEWAY_URL"),
            gateway_shared_url: var("BENCH_GATEWAY_SHARED_URL"),
            sim_pid: pid("BENCH_SIM_PID")?,
            nginx_pid: pid("BENCH_NGINX_PID")?,
            gateway_pid: pid("BENCH_GATEWAY_PID")?,
            gateway_shared_pid: pid("BENCH_GATEWAY_SHARED_PID")?,
            store_pid: pid("BENCH_STORE_PID")?,
            seconds: parsed("BENCH_SECONDS", 10.0)?,
            warmup: parsed("BENCH_WARMUP_SECONDS", 2.0)?,
            concurrency: parsed("BENCH_CONCURRENCY", 32)?,
            mailboxes: parsed("BENCH_MAILBOXES", 20)?,
            sizes,
            large_size: parse_size(&var("BENCH_LARGE_SIZE").unwrap_or_else(|| "100MiB".into()))?,
            large_reps: parsed("BENCH_LARGE_REPS", 3)?,
            rounds: parsed("BENCH_ROUNDS", 3)?,
            routes,
            distinct_items: parsed("BENCH_DISTINCT_ITEMS", 2)?,
            client_threads: parsed("BENCH_CLIENT_THREADS", 2)?,
            clk_tck: parsed("BENCH_CLK_TCK", 100.0)?,
            results: var("BENCH_RESULTS").map(PathBuf::from),
            command: var("BENCH_COMMAND").unwrap_or_else(|| "./bench/run".to_owned()),
            notes: var("BENCH_NOTES")
                .map(|notes| notes.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        ensure!(settings.seconds > 0.0, "BENCH_SECONDS must be positive");
        ensure!(settings.rounds >= 1, "BENCH_ROUNDS must be at least 1");
        ensure!(
            settings.warmup >= 0.0,
            "BENCH_WARMUP_SECONDS must not be negative"
        );
        ensure!(
            settings.concurrency >= 1,
            "BENCH_CONCURRENCY must be at least 1"
        );
        ensure!(
            settings.mailboxes >= 1,
            "BENCH_MAILBOXES must be at least 1"
        );
        ensure!(
            settings.distinct_items >= 1,
            "BENCH_DISTINCT_ITEMS must be at least 1"
        );
        ensure!(
            settings.client_threads >= 1,
            "BENCH_CLIENT_THREADS must be at least 1"
        );
        for route in &settings.routes {
            match route {
                Route::Nginx => ensure!(settings.nginx_url.is_some(), "BENCH_NGINX_URL is not set"),
                Route::Gateway => {
                    ensure!(
                        settings.gateway_url.is_some(),
                        "BENCH_GATEWAY_URL is not set"
                    )
                }
                Route::GatewayShared => ensure!(
                    settings.gateway_shared_url.is_some(),
                    "BENCH_GATEWAY_SHARED_URL is not set"
                ),
                Route::Direct => {}
            }
        }
        Ok(settings)
    }

    /// The PID whose process is "in the middle" of a route, if any.
    fn middle_pid(&self, route: Route) -> Option<u32> {
        match route {
            Route::Direct => None,
            Route::Nginx => self.nginx_pid,
            Route::Gateway => self.gateway_pid,
            Route::GatewayShared => self.gateway_shared_pid,
        }
    }
}

/// A mailbox of the simulated tenant, with the three URLs an item for its inbox goes to.
struct Target {
    inbox_id: String,
    direct_url: String,
    nginx_url: Option<String>,
    gateway_url: Option<String>,
    gateway_shared_url: Option<String>,
}

impl Target {
    fn url(&self, route: Route) -> &str {
        match route {
            Route::Direct => &self.direct_url,
            Route::Nginx => self.nginx_url.as_deref().expect("checked in Settings"),
            Route::Gateway => self.gateway_url.as_deref().expect("checked in Settings"),
            Route::GatewayShared => self
                .gateway_shared_url
                .as_deref()
                .expect("checked in Settings"),
        }
    }
}

/// The bodies of one item size: raw items for the gateway, and per mailbox the importItem JSON of
/// each for the other two paths (the JSON names the mailbox's inbox, so it differs per mailbox).
struct Bodies {
    /// The size asked for; the items are a few bytes longer or shorter.
    nominal: usize,
    raw: Vec<Bytes>,
    /// `json[mailbox][item]`.
    json: Vec<Vec<Bytes>>,
}

impl Bodies {
    fn build(size: usize, distinct: usize, targets: &[Target]) -> Bodies {
        let raw: Vec<Bytes> = (0..distinct)
            // Subjects of equal length, so that every item has the same size.
            .map(|n| Bytes::from(synthetic_item(&format!("bench item {n:04}"), size)))
            .collect();
        let encoded: Vec<String> = raw.iter().map(|item| STANDARD.encode(item)).collect();
        let json = targets
            .iter()
            .map(|target| {
                encoded
                    .iter()
                    .map(|data| {
                        Bytes::from(format!(
                            r#"{{"FolderId":"{}","Mode":"create","Data":"{data}"}}"#,
                            target.inbox_id
                        ))
                    })
                    .collect()
            })
            .collect();
        Bodies {
            nominal: size,
            raw,
            json,
        }
    }

    fn raw_len(&self) -> usize {
        self.raw[0].len()
    }
}

/// CPU time, memory and sink counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    /// Seconds of user + system CPU of the middle process(es).
    middle_cpu: Option<f64>,
    /// Sum of the middle process(es)' current RSS, KiB.
    middle_rss_kib: Option<u64>,
    /// Sum of the middle process(es)' peak RSS since the last reset, KiB.
    middle_hwm_kib: Option<u64>,
    sim_cpu: Option<f64>,
    /// The shared gateway's store, on its route only.
    store_cpu: Option<f64>,
    client_cpu: f64,
    /// Busy and total jiffies of the whole machine.
    host: (u64, u64),
    /// The sink's `sink_items` and `sink_bytes`.
    sink: (u64, u64),
}

/// Reads `/proc` for the processes of one cell.
struct Probe {
    middle: Vec<u32>,
    sim_pid: Option<u32>,
    store_pid: Option<u32>,
    clk_tck: f64,
}

impl Probe {
    /// The processes that do the middle's work: the gateway, or nginx's workers (the master only
    /// accepts configuration and signals).
    fn new(settings: &Settings, route: Route) -> anyhow::Result<Probe> {
        let middle = match (route, settings.middle_pid(route)) {
            (Route::Nginx, Some(master)) => {
                let workers = children(master)?;
                ensure!(!workers.is_empty(), "nginx master {master} has no workers");
                workers
            }
            (_, Some(pid)) => vec![pid],
            (_, None) => Vec::new(),
        };
        Ok(Probe {
            middle,
            sim_pid: settings.sim_pid,
            store_pid: settings.store_pid.filter(|_| route == Route::GatewayShared),
            clk_tck: settings.clk_tck,
        })
    }

    /// Resets the peak RSS of the middle processes to their current RSS (Linux `clear_refs` 5).
    fn reset_peaks(&self) -> anyhow::Result<()> {
        for pid in &self.middle {
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
                .with_context(|| format!("resetting the peak RSS of process {pid}"))?;
        }
        Ok(())
    }

    async fn snapshot(&self, http: &Client, sim_url: &str) -> anyhow::Result<Snapshot> {
        let (middle_cpu, middle_rss_kib, middle_hwm_kib) = if self.middle.is_empty() {
            (None, None, None)
        } else {
            let mut cpu = 0.0;
            let (mut rss, mut hwm) = (0, 0);
            for pid in &self.middle {
                cpu += cpu_seconds(&format!("/proc/{pid}/stat"), self.clk_tck)?;
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
                rss += status_kib(&status, "VmRSS")?;
                hwm += status_kib(&status, "VmHWM")?;
            }
            (Some(cpu), Some(rss), Some(hwm))
        };
        let sim_cpu = self
            .sim_pid
            .map(|pid| cpu_seconds(&format!("/proc/{pid}/stat"), self.clk_tck))
            .transpose()?;
        let store_cpu = self
            .store_pid
            .map(|pid| cpu_seconds(&format!("/proc/{pid}/stat"), self.clk_tck))
            .transpose()?;
        let client_cpu = cpu_seconds("/proc/self/stat", self.clk_tck)?;
        let host = host_jiffies()?;
        // Last, since under load its answer takes a while; the CPU readings above are the instant.
        let counters: Value = http
            .get(format!("{sim_url}/_simulator/counters"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let counter = |name: &str| counters[name].as_u64().unwrap_or(0);
        Ok(Snapshot {
            middle_cpu,
            middle_rss_kib,
            middle_hwm_kib,
            sim_cpu,
            store_cpu,
            client_cpu,
            host,
            sink: (counter("sink_items"), counter("sink_bytes")),
        })
    }
}

/// The PIDs whose parent is `parent`.
fn children(parent: u32) -> anyhow::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_fields(&stat).get(1).and_then(|ppid| ppid.parse().ok()) == Some(parent) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces), from `state` on.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect())
}

/// User + system CPU seconds of a process, all threads (`utime` and `stime` of `/proc/PID/stat`).
fn cpu_seconds(stat_path: &str, clk_tck: f64) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    let fields = stat_fields(&stat);
    // Fields 14 and 15 of proc(5), counted from `pid` = 1; `state` (field 3) is index 0 here.
    let jiffies = |index: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(index)
            .with_context(|| format!("{stat_path} is too short"))?
            .parse::<u64>()? as f64)
    };
    Ok((jiffies(11)? + jiffies(12)?) / clk_tck)
}

/// A `Vm...:   1234 kB` line of `/proc/PID/status`, in KiB.
fn status_kib(status: &str, key: &str) -> anyhow::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/PID/status"))
}

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn host_jiffies() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let values: Vec<u64> = stat
        .lines()
        .next()
        .context("/proc/stat is empty")?
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    ensure!(values.len() >= 8, "/proc/stat has too few fields");
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let idle = values[3] + values[4];
    let total: u64 = values[..8].iter().sum();
    Ok((total - idle, total))
}

/// How long a cell runs.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Back-to-back requests for `warmup` seconds (not counted), then `seconds` measured.
    Timed { warmup: f64, seconds: f64 },
    /// Exactly `reps` requests per worker, all measured.
    Count { reps: usize },
}

/// What one cell measured.
struct Cell {
    route: Route,
    size: usize,
    raw_len: usize,
    concurrency: usize,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: f64,
    /// Latencies of the successful requests, microseconds, sorted.
    latencies_us: Vec<u64>,
    before: Snapshot,
    after: Snapshot,
}

impl Cell {
    fn items_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed
    }

    fn mb_per_sec(&self) -> f64 {
        self.items_per_sec() * self.raw_len as f64 / MB
    }

    fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_us.len()) - 1;
        Some(self.latencies_us[index] as f64 / 1000.0)
    }

    /// CPU seconds per 1,000 successful items, from two readings.
    fn per_thousand(&self, before: Option<f64>, after: Option<f64>) -> Option<f64> {
        let spent = after? - before?;
        (self.ok > 0).then(|| spent / self.ok as f64 * 1000.0)
    }

    fn middle_cpu_per_k(&self) -> Option<f64> {
        self.per_thousand(self.before.middle_cpu, self.after.middle_cpu)
    }

    fn sim_cpu_per_k(&self) -> Option<f64> {
        self.per_thousand(self.before.sim_cpu, self.after.sim_cpu)
    }

    fn store_cpu_per_k(&self) -> Option<f64> {
        self.per_thousand(self.before.store_cpu, self.after.store_cpu)
    }

    fn client_cpu_per_k(&self) -> Option<f64> {
        self.per_thousand(Some(self.before.client_cpu), Some(self.after.client_cpu))
    }

    /// Share of the machine's CPU time that was busy during the cell, and the share spent by
    /// processes other than the client, the middle and the sink (concurrent builds, say): the noise.
    fn host_busy_and_others(&self, clk_tck: f64) -> (f64, f64) {
        let busy = self.after.host.0.saturating_sub(self.before.host.0) as f64;
        let total = self.after.host.1.saturating_sub(self.before.host.1) as f64;
        if total <= 0.0 {
            return (0.0, 0.0);
        }
        let delta = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(before), Some(after)) => after - before,
            _ => 0.0,
        };
        let ours = delta(self.before.middle_cpu, self.after.middle_cpu)
            + delta(self.before.sim_cpu, self.after.sim_cpu)
            + delta(self.before.store_cpu, self.after.store_cpu)
            + (self.after.client_cpu - self.before.client_cpu);
        let others = (busy / clk_tck - ours).max(0.0) / (total / clk_tck);
        (busy / total, others)
    }

    fn sink_items(&self) -> u64 {
        self.after.sink.0.saturating_sub(self.before.sink.0)
    }
}

/// Shared by the workers of one cell.
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let http = Client::builder()
        // Loopback only: never a proxy from the environment.
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4 * settings.concurrency)
        .pool_idle_timeout(Duration::from_secs(300))
        .timeout(Duration::from_secs(600))
        .build()?;
    check_sink(&http, &settings).await?;
    let targets = prepare_targets(&http, &settings).await?;
    let gateway_start_rss = settings
        .gateway_pid
        .map(|pid| read_status_kib(pid, "VmRSS"))
        .transpose()?;
    eprintln!(
        "bench: {} mailboxes ready; {} s per cell after {} s of warm-up, concurrency {}",
        targets.len(),
        settings.seconds,
        settings.warmup,
        settings.concurrency
    );

    // Each size's paths in turn, round after round: the machine's speed drifts (it is shared), and
    // interleaving exposes every path to the same drift; the table shows each cell's median round.
    let mut measured = Vec::new();
    for &size in &settings.sizes {
        let bodies = Arc::new(Bodies::build(size, settings.distinct_items, &targets));
        for round in 1..=settings.rounds {
            for &route in &settings.routes {
                let plan = Plan::Timed {
                    warmup: settings.warmup,
                    seconds: settings.seconds,
                };
                let cell = run_cell(
                    &http,
                    &settings,
                    &targets,
                    &bodies,
                    route,
                    settings.concurrency,
                    plan,
                )
                .await?;
                eprintln!(
                    "bench: round {round}/{}: {}",
                    settings.rounds,
                    cell_summary(&cell)
                );
                measured.push(cell);
            }
        }
    }
    let failed_rounds: u64 = measured.iter().map(|cell| cell.errors).sum();
    let shared_per_round = paired_ratios(
        &measured,
        settings.routes.len(),
        |cell| cell.size,
        |cell| cell.route,
        Cell::items_per_sec,
        (Route::GatewayShared, Route::Gateway),
    );
    let cells = medians(
        measured,
        |cell| (cell.size, cell.route),
        Cell::items_per_sec,
    );

    let mut large = Vec::new();
    let mut gateway_idle_rss = None;
    if settings.large_size > 0 && settings.large_reps > 0 {
        // One mailbox, one item: the JSON of a 100 MiB item is 133 MiB.
        let bodies = Arc::new(Bodies::build(settings.large_size, 1, &targets[..1]));
        for &route in &settings.routes {
            // Let the previous cell's connections and buffers settle before reading the idle RSS.
            tokio::time::sleep(Duration::from_secs(1)).await;
            if route == Route::Gateway {
                gateway_idle_rss = settings
                    .gateway_pid
                    .map(|pid| read_status_kib(pid, "VmRSS"))
                    .transpose()?;
            }
            let plan = Plan::Count {
                reps: settings.large_reps,
            };
            let cell = run_cell(&http, &settings, &targets[..1], &bodies, route, 1, plan).await?;
            eprintln!("bench: {}", cell_summary(&cell));
            large.push(cell);
        }
    }

    let report = report(
        &settings,
        &cells,
        &shared_per_round,
        &large,
        gateway_start_rss,
        gateway_idle_rss,
    );
    println!("{report}");
    if let Some(path) = &settings.results {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    let failed: u64 = failed_rounds + large.iter().map(|cell| cell.errors).sum::<u64>();
    ensure!(
        failed == 0,
        "{failed} requests failed; see the errors column"
    );
    Ok(())
}

/// For each size, in the order measured, the items/s of route `pair.0` ÷ route `pair.1` within each
/// round. `cells` are in the order measured: by size, then round, then `routes_per_round` routes; the
/// two routes of one round ran a minute or two apart, so the machine's drift touches both alike, where
/// the two medians of the table may come from different minutes.
fn paired_ratios<T, R: PartialEq>(
    cells: &[T],
    routes_per_round: usize,
    size: impl Fn(&T) -> usize,
    route: impl Fn(&T) -> R,
    rate: impl Fn(&T) -> f64,
    pair: (R, R),
) -> Vec<(usize, Vec<f64>)> {
    let mut ratios: Vec<(usize, Vec<f64>)> = Vec::new();
    for round in cells.chunks(routes_per_round.max(1)) {
        let find = |wanted: &R| round.iter().find(|cell| route(cell) == *wanted);
        let (Some(top), Some(bottom)) = (find(&pair.0), find(&pair.1)) else {
            continue;
        };
        let Some(value) = ratio(Some(rate(top)), Some(rate(bottom))) else {
            continue;
        };
        match ratios.iter_mut().find(|(s, _)| *s == size(top)) {
            Some((_, values)) => values.push(value),
            None => ratios.push((size(top), vec![value])),
        }
    }
    ratios
}

/// The median (by `rate`; the upper one of an even count) of each group of cells with the same `key`,
/// in the order the groups were first measured.
fn medians<T, K: PartialEq>(
    cells: Vec<T>,
    key: impl Fn(&T) -> K,
    rate: impl Fn(&T) -> f64,
) -> Vec<T> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    for cell in cells {
        match groups.iter_mut().find(|group| key(&group[0]) == key(&cell)) {
            Some(group) => group.push(cell),
            None => groups.push(vec![cell]),
        }
    }
    groups
        .into_iter()
        .map(|mut group| {
            group.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
            let middle = group.len() / 2;
            group.swap_remove(middle)
        })
        .collect()
}

/// Refuses to measure unless the simulator is in sink mode without a concurrency limit.
async fn check_sink(http: &Client, settings: &Settings) -> anyhow::Result<()> {
    let behaviour: Value = http
        .get(format!("{}/_simulator/behaviour", settings.sim_url))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        behaviour["sink"] == true && behaviour["max_concurrent_per_mailbox"].is_null(),
        "the simulator must be in sink mode without a concurrency limit \
         (PUT /_simulator/behaviour {{\"sink\":true,\"max_concurrent_per_mailbox\":null}}); it has {behaviour}"
    );
    Ok(())
}

/// The demo mailbox and `bench01@contoso.com`... up to `BENCH_MAILBOXES`, each created if missing,
/// resolved through Graph as a client would, with an import session of its own.
async fn prepare_targets(http: &Client, settings: &Settings) -> anyhow::Result<Vec<Target>> {
    let sim = &settings.sim_url;
    let token: Value = http
        .post(format!("{sim}/{}/oauth2/v2.0/token", DEMO.tenant_id))
        .form(&[
            ("client_id", DEMO.client_id),
            ("client_secret", DEMO.client_secret),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await?
        .error_for_status()
        .context("getting a Graph token from the simulator")?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .context("the token answer has no access_token")?
        .to_owned();
    let graph = format!("{sim}/v1.0");
    let mut targets = Vec::new();
    for n in 0..settings.mailboxes {
        let address = if n == 0 {
            DEMO.mailbox_address.to_owned()
        } else {
            format!("bench{n:02}@contoso.com")
        };
        if n > 0 {
            let added = http
                .post(format!("{sim}/_simulator/mailboxes"))
                .json(&serde_json::json!({ "address": address }))
                .send()
                .await?;
            // 409: it exists from an earlier run against the same simulator.
            ensure!(
                added.status().is_success() || added.status() == reqwest::StatusCode::CONFLICT,
                "adding mailbox {address}: {}",
                added.status()
            );
        }
        let settings_json: Value = http
            .get(format!("{graph}/users/{address}/settings/exchange"))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("resolving {address}"))?
            .json()
            .await?;
        let mailbox_id = settings_json["primaryMailboxId"]
            .as_str()
            .with_context(|| format!("{address} has no primaryMailboxId"))?
            .to_owned();
        let mailbox_path = format!(
            "{graph}/admin/exchange/mailboxes/{}",
            percent_encoding::utf8_percent_encode(&mailbox_id, percent_encoding::NON_ALPHANUMERIC)
        );
        let inbox: Value = http
            .get(format!("{mailbox_path}/folders/inbox"))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("finding the inbox of {address}"))?
            .json()
            .await?;
        let session: Value = http
            .post(format!("{mailbox_path}/createImportSession"))
            .bearer_auth(&token)
            .json(&serde_json::json!({}))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("creating an import session for {address}"))?
            .json()
            .await?;
        let direct_url = session["importUrl"]
            .as_str()
            .context("the session has no importUrl")?
            .to_owned();
        let nginx_url = settings
            .nginx_url
            .as_deref()
            .map(|origin| same_path_on(&direct_url, origin))
            .transpose()?;
        targets.push(Target {
            gateway_url: settings
                .gateway_url
                .as_ref()
                .map(|gateway| format!("{gateway}/v1/mailboxes/{address}/folders/inbox/items")),
            gateway_shared_url: settings
                .gateway_shared_url
                .as_ref()
                .map(|gateway| format!("{gateway}/v1/mailboxes/{address}/folders/inbox/items")),
            inbox_id: inbox["id"]
                .as_str()
                .context("the inbox has no id")?
                .to_owned(),
            direct_url,
            nginx_url,
        });
    }
    Ok(targets)
}

/// `url` with its origin replaced by `origin`: same path, same query.
fn same_path_on(url: &str, origin: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(url)?;
    let origin = url::Url::parse(origin)?;
    let mut moved = url.clone();
    moved
        .set_scheme(origin.scheme())
        .map_err(|()| anyhow::anyhow!("cannot set scheme"))?;
    moved.set_host(origin.host_str())?;
    moved
        .set_port(origin.port_or_known_default())
        .map_err(|()| anyhow::anyhow!("cannot set port"))?;
    ensure!(
        moved.path() == url.path() && moved.query() == url.query(),
        "moving the importUrl changed its path or query"
    );
    Ok(moved.into())
}

fn read_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status"))?,
        key,
    )
}

/// Runs one cell: `concurrency` workers, worker `w` sending to mailbox `w % mailboxes` (so no
/// mailbox sees more than `ceil(concurrency / mailboxes)` requests at once: 2 for 32 over 20, under
/// Outlook's limit of 4 that the gateway enforces), alternating between the distinct items.
async fn run_cell(
    http: &Client,
    settings: &Settings,
    targets: &[Target],
    bodies: &Arc<Bodies>,
    route: Route,
    concurrency: usize,
    plan: Plan,
) -> anyhow::Result<Cell> {
    let probe = Probe::new(settings, route)?;
    let tally = Arc::new(Mutex::new(Tally {
        latencies_us: Vec::new(),
        ok: 0,
        errors: 0,
        first_error: None,
    }));
    let start = Instant::now();
    let (window_start, window_end) = match plan {
        Plan::Timed { warmup, seconds } => {
            let window_start = start + Duration::from_secs_f64(warmup);
            (
                Some(window_start),
                Some(window_start + Duration::from_secs_f64(seconds)),
            )
        }
        Plan::Count { .. } => (None, None),
    };
    let before = if window_start.is_none() {
        probe.reset_peaks()?;
        Some(probe.snapshot(http, &settings.sim_url).await?)
    } else {
        None
    };
    let measured_from = Instant::now();

    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let target_index = worker % targets.len();
        let url = targets[target_index].url(route).to_owned();
        let http = http.clone();
        let bodies = bodies.clone();
        let tally = tally.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = 0usize;
            loop {
                match (plan, window_end) {
                    (Plan::Timed { .. }, Some(end)) if Instant::now() >= end => break,
                    (Plan::Count { reps }, _) if sent >= reps => break,
                    _ => {}
                }
                let item = (worker + sent) % bodies.raw.len();
                let request = match route {
                    Route::Gateway | Route::GatewayShared => http
                        .post(&url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .body(bodies.raw[item].clone()),
                    Route::Direct | Route::Nginx => http
                        .post(&url)
                        .header(CONTENT_TYPE, "application/json")
                        .body(bodies.json[target_index][item].clone()),
                };
                sent += 1;
                let began = Instant::now();
                let outcome = match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        match response.bytes().await {
                            Ok(_) if status.is_success() => Ok(()),
                            Ok(body) => Err(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            )),
                            Err(error) => Err(format!("reading the answer: {error}")),
                        }
                    }
                    Err(error) => Err(format!("sending: {error}")),
                };
                let done = Instant::now();
                let counted = match (window_start, window_end) {
                    (Some(from), Some(to)) => done >= from && done <= to,
                    _ => true,
                };
                if !counted {
                    continue;
                }
                let mut tally = tally.lock().expect("no worker panics while holding it");
                match outcome {
                    Ok(()) => {
                        tally.ok += 1;
                        tally
                            .latencies_us
                            .push((done - began).as_micros().try_into().unwrap_or(u64::MAX));
                    }
                    Err(error) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(error);
                    }
                }
            }
        }));
    }

    let (before, after, elapsed) = match (window_start, window_end) {
        (Some(from), Some(to)) => {
            tokio::time::sleep_until(from).await;
            probe.reset_peaks()?;
            let before = probe.snapshot(http, &settings.sim_url).await?;
            let measured_from = Instant::now();
            tokio::time::sleep_until(to).await;
            let after = probe.snapshot(http, &settings.sim_url).await?;
            let elapsed = measured_from.elapsed().as_secs_f64();
            for worker in workers {
                worker.await?;
            }
            (before, after, elapsed)
        }
        _ => {
            for worker in workers {
                worker.await?;
            }
            let elapsed = measured_from.elapsed().as_secs_f64();
            let after = probe.snapshot(http, &settings.sim_url).await?;
            (before.expect("taken above"), after, elapsed)
        }
    };

    let tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("a worker still holds the tally"))?
        .into_inner()
        .expect("no worker panicked");
    let mut latencies_us = tally.latencies_us;
    latencies_us.sort_unstable();
    let cell = Cell {
        route,
        size: bodies.nominal,
        raw_len: bodies.raw_len(),
        concurrency,
        ok: tally.ok,
        errors: tally.errors,
        first_error: tally.first_error,
        elapsed,
        latencies_us,
        before,
        after,
    };
    // The sink's own count is the proof that the items arrived and were checked. Its counters are
    // read a moment after the window's edges, so a few items either way are expected.
    if (cell.sink_items() as f64) < cell.ok as f64 * 0.95 {
        eprintln!(
            "bench: warning: {} {}: the sink counted {} items, the client {}",
            route.name(),
            size_label(cell.size),
            cell.sink_items(),
            cell.ok
        );
    }
    Ok(cell)
}

fn cell_summary(cell: &Cell) -> String {
    let mut line = format!(
        "{:>8} {:>8} c={:<3} {:>7} ok {:>3} err {:>9.1} items/s {:>8.1} MB/s p50 {} p99 {} middle CPU s/1k {}",
        cell.route.name(),
        size_label(cell.size),
        cell.concurrency,
        cell.ok,
        cell.errors,
        cell.items_per_sec(),
        cell.mb_per_sec(),
        opt(cell.percentile_ms(50.0), 2),
        opt(cell.percentile_ms(99.0), 2),
        opt(cell.middle_cpu_per_k(), 3),
    );
    if let Some(error) = &cell.first_error {
        let _ = write!(line, " first error: {error}");
    }
    line
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.decimals$}"))
}

fn mib(kib: Option<u64>) -> String {
    opt(kib.map(|kib| kib as f64 / 1024.0), 1)
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    let (numerator, denominator) = (numerator?, denominator?);
    (denominator > 0.0).then(|| numerator / denominator)
}

/// Issue 5's targets per item size: (least items/s gateway/nginx, most CPU per item gateway/nginx).
fn targets_for(size: usize) -> (Option<f64>, Option<f64>) {
    match size {
        s if s == 4 * KIB => (Some(0.9), Some(1.5)),
        s if s == 64 * KIB => (Some(1.0), None),
        s if s == MIB => (Some(1.0), Some(1.0)),
        _ => (None, None),
    }
}

fn verdict(value: Option<f64>, bound: f64, at_least: bool) -> String {
    match value {
        None => "–".to_owned(),
        Some(value) if (at_least && value >= bound) || (!at_least && value <= bound) => {
            format!("{}{bound} met", if at_least { "≥" } else { "≤" })
        }
        Some(_) => format!("{}{bound} **missed**", if at_least { "≥" } else { "≤" }),
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, model)| {
            model.trim().to_owned()
        });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = status_kib(&meminfo, "MemTotal").map_or("unknown".to_owned(), |kib| {
        format!("{:.1} GiB", kib as f64 / MIB as f64)
    });
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "nproc {cpus}, CPU \"{model}\", memory {memory}, Linux {}",
        kernel.trim()
    )
}

fn report(
    settings: &Settings,
    cells: &[Cell],
    shared_per_round: &[(usize, Vec<f64>)],
    large: &[Cell],
    gateway_start_rss: Option<u64>,
    gateway_idle_rss: Option<u64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmark: direct vs nginx vs mailbox-gateway\n");
    let _ = writeln!(
        out,
        "Measured {} on this machine: {}.  ",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    );
    let _ = writeln!(out, "Command: `{}`  ", settings.command);
    for note in &settings.notes {
        let _ = writeln!(out, "{note}  ");
    }
    let _ = writeln!(
        out,
        "Cells: {} s measured after {} s of warm-up, the median of {} interleaved rounds by items/s, concurrency {}, \
         {} mailboxes, {} distinct items per size; \
         the simulator is the sink for every path (`Behaviour::sink`, no concurrency limit). \
         Client, middle process and sink share the machine's {} cores. How to read this: \
         [bench/README.md](README.md).\n",
        settings.seconds,
        settings.warmup,
        settings.rounds,
        settings.concurrency,
        settings.mailboxes,
        settings.distinct_items,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let _ = writeln!(out, "## Throughput, latency and cost per path\n");
    let _ = writeln!(
        out,
        "| size | path | items/s | MB/s | p50 ms | p99 ms | middle CPU s/1k items | middle peak RSS MiB | sink CPU s/1k | store CPU s/1k | client CPU s/1k | host busy | others | items | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for cell in cells {
        let (busy, others) = cell.host_busy_and_others(settings.clk_tck);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {} | {} |",
            size_label(cell.size),
            cell.route.name(),
            cell.items_per_sec(),
            cell.mb_per_sec(),
            opt(cell.percentile_ms(50.0), 2),
            opt(cell.percentile_ms(99.0), 2),
            opt(cell.middle_cpu_per_k(), 3),
            mib(cell.after.middle_hwm_kib),
            opt(cell.sim_cpu_per_k(), 3),
            opt(cell.store_cpu_per_k(), 3),
            opt(cell.client_cpu_per_k(), 3),
            busy * 100.0,
            others * 100.0,
            cell.ok,
            cell.errors,
        );
    }

    let find = |cells: &[Cell], size: usize, route: Route| -> Option<usize> {
        cells
            .iter()
            .position(|c| c.size == size && c.route == route)
    };
    let _ = writeln!(
        out,
        "\n## Ratios (gateway ÷ nginx, gateway ÷ direct) and issue 5's targets\n"
    );
    let _ = writeln!(
        out,
        "| size | items/s gw/nginx | target | items/s gw/direct | CPU per item gw/nginx | target | peak RSS gw/nginx |"
    );
    let _ = writeln!(out, "|---|--:|---|--:|--:|---|--:|");
    let mut sizes: Vec<usize> = cells.iter().map(|c| c.size).collect();
    sizes.dedup();
    for size in sizes {
        let gateway = find(cells, size, Route::Gateway).map(|i| &cells[i]);
        let nginx = find(cells, size, Route::Nginx).map(|i| &cells[i]);
        let direct = find(cells, size, Route::Direct).map(|i| &cells[i]);
        let rate = |cell: Option<&Cell>| cell.map(Cell::items_per_sec);
        let cpu = |cell: Option<&Cell>| cell.and_then(Cell::middle_cpu_per_k);
        let rss = |cell: Option<&Cell>| cell.and_then(|c| c.after.middle_hwm_kib.map(|k| k as f64));
        let items_vs_nginx = ratio(rate(gateway), rate(nginx));
        let cpu_vs_nginx = ratio(cpu(gateway), cpu(nginx));
        let (min_rate, max_cpu) = targets_for(size);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            size_label(size),
            opt(items_vs_nginx, 2),
            min_rate.map_or("–".to_owned(), |b| verdict(items_vs_nginx, b, true)),
            opt(ratio(rate(gateway), rate(direct)), 2),
            opt(cpu_vs_nginx, 2),
            max_cpu.map_or("–".to_owned(), |b| verdict(cpu_vs_nginx, b, false)),
            opt(ratio(rss(gateway), rss(nginx)), 2),
        );
    }

    if cells.iter().any(|c| c.route == Route::GatewayShared) {
        let _ = writeln!(
            out,
            "\n## Shared state: the gateway with a Valkey/Redis store ÷ the gateway in memory\n"
        );
        let _ = writeln!(
            out,
            "| size | items/s shared/memory | target | the same within each round | gateway CPU per item shared/memory | store CPU per item (ms) | store CPU ÷ gateway CPU |"
        );
        let _ = writeln!(out, "|---|--:|---|--:|--:|--:|--:|");
        let mut sizes: Vec<usize> = cells.iter().map(|c| c.size).collect();
        sizes.dedup();
        for size in sizes {
            let memory = find(cells, size, Route::Gateway).map(|i| &cells[i]);
            let shared = find(cells, size, Route::GatewayShared).map(|i| &cells[i]);
            let rate = |cell: Option<&Cell>| cell.map(Cell::items_per_sec);
            let cpu = |cell: Option<&Cell>| cell.and_then(Cell::middle_cpu_per_k);
            let store = shared.and_then(Cell::store_cpu_per_k);
            let items = ratio(rate(shared), rate(memory));
            let target = match size {
                4096 => verdict(items, 0.8, true),
                65536 => verdict(items, 0.95, true),
                _ => "–".to_owned(),
            };
            let each_round = shared_per_round
                .iter()
                .find(|(s, _)| *s == size)
                .map_or_else(
                    || "–".to_owned(),
                    |(_, values)| {
                        let values: Vec<String> =
                            values.iter().map(|v| format!("{v:.2}")).collect();
                        values.join(", ")
                    },
                );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                size_label(size),
                opt(items, 2),
                target,
                each_round,
                opt(ratio(cpu(shared), cpu(memory)), 2),
                opt(store, 3),
                opt(ratio(store, cpu(shared)), 2),
            );
        }
    }

    if !large.is_empty() {
        let item = large[0].raw_len;
        let _ = writeln!(
            out,
            "\n## One {} item at a time ({} repetitions per path)\n",
            size_label(settings.large_size),
            settings.large_reps
        );
        let _ = writeln!(
            out,
            "| path | items/s | MB/s | median s | max s | middle CPU s/item | middle RSS before MiB | middle peak RSS MiB | growth MiB | growth ÷ item | errors |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for cell in large {
            let growth = match (cell.before.middle_rss_kib, cell.after.middle_hwm_kib) {
                (Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
                _ => None,
            };
            let growth_ratio = growth.map(|g| g as f64 * 1024.0 / item as f64);
            let target = if cell.route == Route::Gateway {
                format!(" ({})", verdict(growth_ratio, 1.3, false))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {}{} | {} |",
                cell.route.name(),
                cell.items_per_sec(),
                cell.mb_per_sec(),
                opt(cell.percentile_ms(50.0).map(|ms| ms / 1000.0), 2),
                opt(cell.percentile_ms(100.0).map(|ms| ms / 1000.0), 2),
                opt(cell.middle_cpu_per_k().map(|k| k / 1000.0), 3),
                mib(cell.before.middle_rss_kib),
                mib(cell.after.middle_hwm_kib),
                mib(growth),
                opt(growth_ratio, 2),
                target,
                cell.errors,
            );
        }
        let _ = writeln!(
            out,
            "\nGateway RSS at start, before any request: {} MiB; idle before its {} item: {} MiB.",
            mib(gateway_start_rss),
            size_label(settings.large_size),
            mib(gateway_idle_rss)
        );
    }

    let errors: Vec<&Cell> = cells
        .iter()
        .chain(large)
        .filter(|c| c.first_error.is_some())
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\n## Errors\n");
        for cell in errors {
            let _ = writeln!(
                out,
                "- {} {}: {} failed; first: {}",
                cell.route.name(),
                size_label(cell.size),
                cell.errors,
                cell.first_error.as_deref().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_keeps_its_median_round_in_first_measured_order() {
        let rounds = vec![
            ("4KiB", "nginx", 10.0),
            ("4KiB", "gateway", 7.0),
            ("4KiB", "nginx", 30.0),
            ("4KiB", "gateway", 5.0),
            ("4KiB", "nginx", 20.0),
            ("4KiB", "gateway", 9.0),
            ("1MiB", "nginx", 1.0),
        ];
        let kept = medians(rounds, |r| (r.0, r.1), |r| r.2);
        assert_eq!(
            kept,
            vec![
                ("4KiB", "nginx", 20.0),
                ("4KiB", "gateway", 7.0),
                ("1MiB", "nginx", 1.0)
            ]
        );
    }

    #[test]
    fn ratios_pair_the_two_routes_of_each_round_per_size() {
        // Two sizes, two rounds each, three routes per round.
        let cells = vec![
            (4096, "nginx", 30.0),
            (4096, "memory", 10.0),
            (4096, "shared", 8.0),
            (4096, "nginx", 31.0),
            (4096, "memory", 20.0),
            (4096, "shared", 15.0),
            (65536, "nginx", 9.0),
            (65536, "memory", 4.0),
            (65536, "shared", 3.0),
            (65536, "nginx", 9.0),
            (65536, "shared", 2.0),
            (65536, "memory", 2.5),
        ];
        let ratios = paired_ratios(&cells, 3, |c| c.0, |c| c.1, |c| c.2, ("shared", "memory"));
        assert_eq!(
            ratios,
            vec![(4096, vec![0.8, 0.75]), (65536, vec![0.75, 0.8])]
        );
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size(" 1MiB").unwrap(), MIB);
        assert_eq!(parse_size("100M").unwrap(), 100 * MIB);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("4KB?").is_err());
        assert!(parse_size("KiB").is_err());
    }

    #[test]
    fn stat_fields_survive_spaces_and_parentheses_in_the_command_name() {
        let stat = "42 (tokio (runtime) 1) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0";
        let fields = stat_fields(stat);
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "7");
        assert_eq!((fields[11], fields[12]), ("250", "30"));
    }

    #[test]
    fn the_import_url_moves_to_another_origin_with_its_path_and_query() {
        let moved = same_path_on(
            "http://127.0.0.1:9000/api/gv1.0/Mailboxes('MBX:a@b')/importItem?authtoken=x-y_z",
            "http://127.0.0.1:8081",
        )
        .unwrap();
        assert_eq!(
            moved,
            "http://127.0.0.1:8081/api/gv1.0/Mailboxes('MBX:a@b')/importItem?authtoken=x-y_z"
        );
    }
}
