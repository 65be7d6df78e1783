//! Test support: a moto server for the whole test binary, and per-test isolation (each test gets
//! its own table prefix and cluster name, so tests run in parallel against one server).
//!
//! The endpoint comes from `NODEWRIGHT_MOTO_ENDPOINT` when set; otherwise the first test starts moto
//! (installed into `.venv` by `scripts/venv`, which `scripts/test` runs) on a free loopback port,
//! through `scripts/moto_server.py`, which serializes request handling: moto applies DynamoDB
//! conditional writes without a lock, and the concurrency tests need DynamoDB's per-item atomicity. The server runs under a shell that kills it when this process's end of its stdin pipe
//! closes, so it never outlives the tests.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nodewright_aws::state::{StateStore, TableNames, create_tables};
use nodewright_aws::{AwsClients, ClientOptions};

static SERVER: OnceLock<(String, Mutex<Option<Child>>)> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The workspace root (the directory with Cargo.lock), whichever crate includes this module.
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() && dir.pop() {}
    dir
}

/// The moto endpoint URL, starting the server on first use.
pub fn moto_endpoint() -> String {
    if let Ok(url) = std::env::var("NODEWRIGHT_MOTO_ENDPOINT") {
        return url;
    }
    SERVER
        .get_or_init(|| {
            let python = workspace_root().join(".venv/bin/python");
            let launcher = workspace_root().join("scripts/moto_server.py");
            assert!(
                python.exists(),
                "{} is missing: run scripts/venv (scripts/test does) to install the pinned moto server",
                python.display()
            );
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port");
            let script = format!(
                "'{}' '{}' {port} >/dev/null 2>&1 & pid=$!; read _; kill $pid",
                python.display(),
                launcher.display()
            );
            let child = Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::piped())
                .spawn()
                .expect("start moto_server");
            let deadline = Instant::now() + Duration::from_secs(60);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "moto_server did not listen on port {port} within 60 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            (format!("http://127.0.0.1:{port}"), Mutex::new(Some(child)))
        })
        .0
        .clone()
}

/// Stops the server early (normally it ends with the process).
pub fn stop_moto() {
    if let Some((_, child)) = SERVER.get()
        && let Some(mut c) = child.lock().ok().and_then(|mut g| g.take())
    {
        if let Some(stdin) = c.stdin.as_mut() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = c.wait();
    }
}

/// A unique name for this test's tables and cluster.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub async fn clients() -> AwsClients {
    AwsClients::load(&ClientOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto_endpoint()),
        static_credentials: true,
        max_attempts: Some(3),
    })
    .await
}

/// A state store on fresh tables.
pub async fn store(clients: &AwsClients, test: &str) -> StateStore {
    let prefix = unique(test);
    let names = TableNames::new(&prefix).expect("valid prefix");
    create_tables(&clients.dynamodb, &names).await.expect("create tables");
    StateStore::new(clients.dynamodb.clone(), names, format!("cluster-{prefix}")).expect("store")
}
