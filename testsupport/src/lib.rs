//! # cnc-testsupport: real Celery for celery-cnc's tests
//!
//! Tests that talk to real Celery workers need three things, and this crate
//! gives each one in a way that is safe when many test processes run at once:
//!
//! * [`celery_venv`]: a Python virtualenv at `<workspace>/target/celery-venv`
//!   with the pinned Celery the protocol fixtures were captured with. It is
//!   created once; concurrent callers serialise on a lock file
//!   (`std::fs::File::lock`) and a marker file written after a successful
//!   install tells later runs it is complete.
//! * [`CeleryWorker`]: a guard around one `celery worker` process group
//!   running the test app kept in `tests/celery_app/cnc_testapp.py`. It waits
//!   until the worker says it is ready and kills the whole group on drop, so a
//!   failing test leaves no orphans.
//! * Isolation: [`RedisDb`] leases a Redis database number (held by a lock
//!   file for as long as the guard lives), and [`RabbitVhost`] creates a
//!   fresh RabbitMQ vhost. Celery's Redis channels carry the db number
//!   (`/{db}.celeryev/...`), so two tests on different dbs never see each
//!   other's events, queues or control replies.
//!
//! Why shell out to `kill` and `rabbitmqctl`: the workspace forbids `unsafe`,
//! so signals to a process group go through the `kill` command.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What goes into the test virtualenv. The fixtures were captured with 5.7.0.
/// SQLAlchemy and psycopg serve the database result backend
/// (`db+sqlite://`, `db+postgresql://`; SQLAlchemy 2.1 maps `postgresql://`
/// to psycopg 3, not psycopg2).
pub const CELERY_REQUIREMENTS: &[&str] = &[
    "celery[redis]==5.7.0",
    "sqlalchemy",
    "psycopg[binary]",
    "packaging",
];

/// Redis used by the tests.
pub const REDIS_HOST: &str = "127.0.0.1:6379";
/// RabbitMQ used by the tests (AMQP port).
pub const RABBIT_HOST: &str = "127.0.0.1:5672";

/// A harness failure: what was being done and why it failed.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Result of harness operations.
pub type Result<T> = std::result::Result<T, HarnessError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(HarnessError(msg.into()))
}

/// The workspace root (parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `<workspace>/target`, where the venv, logs and lock files live regardless
/// of `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// Directory holding the test Celery app (`cnc_testapp.py`).
pub fn celery_app_dir() -> PathBuf {
    workspace_root().join("tests").join("celery_app")
}

/// Where worker logs go.
pub fn log_dir() -> PathBuf {
    target_dir().join("celery-logs")
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .output()
        .map_err(|e| HarnessError(format!("{what}: cannot run: {e}")))?;
    if !out.status.success() {
        return err(format!(
            "{what}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Create (once) the Celery virtualenv and return its `python` path.
///
/// Safe across parallel test processes: the first takes an exclusive lock on
/// `target/celery-venv.lock`, installs, and writes a marker; the others wait
/// on the lock and then find the marker.
pub fn celery_venv() -> Result<PathBuf> {
    let target = target_dir();
    fs::create_dir_all(&target).map_err(|e| HarnessError(format!("create {target:?}: {e}")))?;
    let venv = target.join("celery-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(".cnc-installed");
    let wanted = CELERY_REQUIREMENTS.join(" ");
    let complete = || {
        fs::read_to_string(&marker)
            .map(|s| s.trim() == wanted)
            .unwrap_or(false)
    };
    if complete() && python.exists() {
        return Ok(python);
    }
    let lock = File::create(target.join("celery-venv.lock"))
        .map_err(|e| HarnessError(format!("venv lock file: {e}")))?;
    lock.lock()
        .map_err(|e| HarnessError(format!("venv lock: {e}")))?;
    if complete() && python.exists() {
        return Ok(python);
    }
    if !python.exists() {
        run_checked(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )?;
    }
    run_checked(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(CELERY_REQUIREMENTS),
        "pip install celery",
    )?;
    fs::write(&marker, &wanted).map_err(|e| HarnessError(format!("venv marker: {e}")))?;
    Ok(python)
}

/// Run a Python script with the venv's interpreter, the test app on
/// `PYTHONPATH` and extra environment variables. Fails on a non-zero exit,
/// with the script's output in the error.
pub fn run_python(script: &str, env: &[(&str, &str)]) -> Result<Output> {
    let python = celery_venv()?;
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(script)
        .env("PYTHONPATH", celery_app_dir())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_checked(&mut cmd, "python script")
}

/// A unique short id for names (queues, workers, vhosts).
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..10])
}

/// How to start a [`CeleryWorker`].
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    /// Node name, `-n` (e.g. `w1@cnc-test-ab12`).
    pub name: String,
    /// Broker URL (`CNC_BROKER`).
    pub broker: String,
    /// Result backend URL (`CNC_BACKEND`), if any.
    pub backend: Option<String>,
    /// Queues to consume (`-Q`).
    pub queues: Vec<String>,
    /// Pool size (`-c`).
    pub concurrency: u32,
    /// `--autoscale max,min`.
    pub autoscale: Option<(u32, u32)>,
    /// Start with `-E` (task events on).
    pub events: bool,
    /// Redis `global_keyprefix` for the app (`CNC_KEYPREFIX`).
    pub keyprefix: Option<String>,
    /// How long to wait for the worker to be ready.
    pub ready_timeout: Duration,
    /// Extra environment for the worker (`CNC_RESULT_EXTENDED`,
    /// `CNC_DB_SCHEMA`... read by the test app).
    pub env: Vec<(String, String)>,
}

impl WorkerOpts {
    /// Defaults: two processes, queue `celery`, events on, 60 s to start.
    pub fn new(name: impl Into<String>, broker: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            broker: broker.into(),
            backend: None,
            queues: vec!["celery".to_owned()],
            concurrency: 2,
            autoscale: None,
            events: true,
            keyprefix: None,
            ready_timeout: Duration::from_secs(60),
            env: Vec::new(),
        }
    }

    /// Add an environment variable for the worker.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Set the result backend.
    pub fn backend(mut self, url: impl Into<String>) -> Self {
        self.backend = Some(url.into());
        self
    }

    /// Set the queues to consume.
    pub fn queues(mut self, queues: &[&str]) -> Self {
        self.queues = queues.iter().map(|q| (*q).to_owned()).collect();
        self
    }

    /// Set the pool size.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }
}

/// A running `celery worker` (process group). Killed with its children on drop.
#[derive(Debug)]
pub struct CeleryWorker {
    child: Child,
    name: String,
    log: PathBuf,
}

impl CeleryWorker {
    /// Start a worker of the test app and wait until it is ready.
    pub fn start(opts: WorkerOpts) -> Result<Self> {
        let python = celery_venv()?;
        let dir = log_dir();
        fs::create_dir_all(&dir).map_err(|e| HarnessError(format!("log dir: {e}")))?;
        let file_name: String = opts
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let log = dir.join(format!("{file_name}.log"));
        let out = File::create(&log).map_err(|e| HarnessError(format!("worker log: {e}")))?;
        let out2 = out
            .try_clone()
            .map_err(|e| HarnessError(format!("worker log: {e}")))?;
        let mut cmd = Command::new(python);
        cmd.args(["-m", "celery", "-A", "cnc_testapp", "worker"])
            .args(["-n", &opts.name])
            .args(["-l", "INFO", "--pool", "prefork"])
            .arg(format!("-c{}", opts.concurrency))
            .arg("-Q")
            .arg(opts.queues.join(","))
            .args(["--without-gossip", "--without-mingle"]);
        if opts.events {
            cmd.arg("-E");
        }
        if let Some((max, min)) = opts.autoscale {
            cmd.arg(format!("--autoscale={max},{min}"));
        }
        cmd.env("CNC_BROKER", &opts.broker)
            .env("PYTHONPATH", celery_app_dir())
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(celery_app_dir())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(out2);
        match &opts.backend {
            Some(b) => cmd.env("CNC_BACKEND", b),
            None => cmd.env_remove("CNC_BACKEND"),
        };
        if let Some(p) = &opts.keyprefix {
            cmd.env("CNC_KEYPREFIX", p);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError(format!("spawn celery worker: {e}")))?;
        let mut worker = Self {
            child,
            name: opts.name.clone(),
            log,
        };
        worker.wait_ready(opts.ready_timeout)?;
        Ok(worker)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if log.contains(" ready.") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return err(format!(
                    "worker {} exited ({status}) before ready:\n{log}",
                    self.name
                ));
            }
            if Instant::now() > deadline {
                return err(format!("worker {} not ready in time:\n{log}", self.name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node name (`-n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id of the main worker process (also its group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the worker's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (lossy UTF-8; the last 1 MB at most).
    pub fn log_text(&self) -> String {
        let mut s = Vec::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(1 << 20)));
            let _ = f.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    /// True while the main process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for the worker to exit by itself (e.g. after a
    /// remote `shutdown`). True if it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stop the worker: SIGTERM to the group (warm shutdown), then SIGKILL
    /// to the group after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.signal_group("TERM");
        let _ = self.wait_exit(grace);
        // Pool children may outlive the parent; kill whatever is left.
        self.signal_group("KILL");
        let _ = self.child.wait();
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// A leased Redis database number, exclusive to its holder across processes
/// (a lock file under `target/redis-db-locks/`). The db is flushed when
/// leased. Dbs 0 and 1 are left to ad-hoc use.
#[derive(Debug)]
pub struct RedisDb {
    db: u32,
    _lock: File,
}

impl RedisDb {
    /// First db in the leased range.
    pub const FIRST: u32 = 2;
    /// Last db in the leased range (Redis has 16 by default).
    pub const LAST: u32 = 15;

    /// Lease a free db, waiting up to 5 minutes for one.
    pub fn acquire() -> Result<Self> {
        let dir = target_dir().join("redis-db-locks");
        fs::create_dir_all(&dir).map_err(|e| HarnessError(format!("lock dir: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            for db in Self::FIRST..=Self::LAST {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(format!("{db}.lock")))
                    .map_err(|e| HarnessError(format!("db lock: {e}")))?;
                if f.try_lock().is_ok() {
                    redis_cli(&["-n", &db.to_string(), "FLUSHDB"])?;
                    return Ok(Self { db, _lock: f });
                }
            }
            if Instant::now() > deadline {
                return err("no free Redis db in 5 minutes");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The db number.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// `redis://127.0.0.1:6379/<db>`.
    pub fn url(&self) -> String {
        format!("redis://{REDIS_HOST}/{}", self.db)
    }
}

/// Run `redis-cli` against the test Redis; returns stdout.
pub fn redis_cli(args: &[&str]) -> Result<String> {
    let out = run_checked(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379"])
            .args(args),
        "redis-cli",
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `rabbitmqctl`; returns stdout.
pub fn rabbitmqctl(args: &[&str]) -> Result<String> {
    let out = run_checked(Command::new("rabbitmqctl").args(args), "rabbitmqctl")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh RabbitMQ vhost with full permissions for `guest`, deleted on drop.
#[derive(Debug)]
pub struct RabbitVhost {
    name: String,
}

impl RabbitVhost {
    /// Create `cnc-test-<random>`.
    pub fn create() -> Result<Self> {
        let name = unique("cnc-test-");
        rabbitmqctl(&["add_vhost", &name])?;
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"])?;
        Ok(Self { name })
    }

    /// The vhost name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{RABBIT_HOST}/{}", self.name)
    }

    /// Close every connection of this vhost whose client properties mention
    /// `name` (its `connection_name`; all connections when `name` is empty).
    /// Returns how many were closed.
    pub fn close_connections(&self, name: &str) -> Result<usize> {
        let list = rabbitmqctl(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "vhost",
            "client_properties",
        ])?;
        let mut closed = 0;
        for line in list.lines() {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() < 3 || cols[1] != self.name {
                continue;
            }
            if !name.is_empty() && !cols[2..].join("\t").contains(name) {
                continue;
            }
            if rabbitmqctl(&["close_connection", cols[0], "cnc test: simulated outage"]).is_ok() {
                closed += 1;
            }
        }
        Ok(closed)
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// Poll `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: another process
/// could take it in between, which is fine for tests).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| HarnessError(format!("bind a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError(format!("free port: {e}")))
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{}", child.id()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A private `redis-server` on its own port (no persistence), for tests
/// that stop and restart the server itself. Killed on drop.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Start one on a free port and wait until it answers PING.
    pub fn start() -> Result<Self> {
        let mut r = Self {
            port: free_port()?,
            child: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `SIGKILL` the server (clients see their connections reset).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// Start the server again on the same port (after [`Self::kill`]) and
    /// wait until it answers PING.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError(format!("spawn redis-server: {e}")))?;
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(30), || {
            let out = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port, "PING"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("PONG")
                .then_some(())
        });
        match up {
            Some(()) => Ok(()),
            None => err(format!(
                "redis-server on port {port} did not answer in 30 s"
            )),
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private RabbitMQ node (own node name, AMQP and distribution ports,
/// data and log directories under `target/`, no plugins), for tests that
/// kill and restart the broker itself. Killed, and its files removed, on
/// drop. Runs as the current user with the system's Erlang cookie home so
/// `rabbitmqctl -n <node>` can reach it.
#[derive(Debug)]
pub struct PrivateRabbit {
    node: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRabbit {
    /// Start a node and wait until it has booted (up to 3 minutes).
    pub fn start() -> Result<Self> {
        let id = unique("cnc-restart-");
        let dir = target_dir().join("rabbit-nodes").join(&id);
        fs::create_dir_all(&dir).map_err(|e| HarnessError(format!("node dir: {e}")))?;
        let port = free_port()?;
        let mut dist_port = free_port()?;
        while dist_port == port {
            dist_port = free_port()?;
        }
        fs::write(dir.join("enabled_plugins"), "[].\n")
            .map_err(|e| HarnessError(format!("plugins file: {e}")))?;
        // The system config pins the listener to 5672: use our own.
        fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .map_err(|e| HarnessError(format!("config file: {e}")))?;
        let mut r = Self {
            node: format!("{id}@localhost"),
            port,
            dist_port,
            dir,
            child: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>//` (the default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}//", self.port)
    }

    /// The Erlang node name (for `rabbitmqctl -n`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `SIGKILL` the node's processes.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// Start the node again (same name, ports and data) after
    /// [`Self::kill`], and wait until it has booted.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let log = File::create(self.dir.join("server.out"))
            .map_err(|e| HarnessError(format!("node log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError(format!("node log: {e}")))?;
        let d = |p: &str| self.dir.join(p);
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        cmd.env("HOME", "/var/lib/rabbitmq")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError(format!("spawn rabbitmq-server: {e}")))?;
        self.child = Some(child);
        let node = self.node.clone();
        let up = wait_for(Duration::from_secs(180), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return Some(false);
            }
            let ok = Command::new("rabbitmqctl")
                .args(["-n", &node, "-q", "await_startup", "--timeout", "5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(Duration::from_millis(400));
            }
            ok.then_some(true)
        });
        match up {
            Some(true) => Ok(()),
            _ => {
                let out = fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
                err(format!("RabbitMQ node {node} did not start:\n{out}"))
            }
        }
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
