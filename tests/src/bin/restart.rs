//! A test supervisor that plays systemd for one instance of the `axum`
//! example, with no balancer in front, under load from `oha`, and restarts
//! it 5 times in each of three modes:
//!
//! * `stop-start`: what `systemctl restart` does with a `.socket` unit. The
//!   supervisor holds the listening socket and hands it to each instance as
//!   fd 3 (`LISTEN_FDS=1`, `LISTEN_PID`, `LISTEN_FDNAMES=http`); the old
//!   instance is sent SIGTERM and waited for, then the new one is started.
//!   Connections that arrive in between wait in the kernel's backlog.
//! * `in-place`: the new instance is started on the same socket first and
//!   waited for until it sends `READY=1` (on its own `NOTIFY_SOCKET`), and
//!   only then is the old one sent SIGTERM; both accept on the socket until
//!   the old one starts draining. Before the 5 restarts, a new instance that
//!   fails to start (a bad `GRACEFUL_DEADLINE`) is tried once: the old one
//!   must keep serving.
//! * `sighup`: restart in place as the crate's API does it
//!   (`tower_graceful::restart`): one instance binds `127.0.0.1:PORT` itself
//!   (no socket held by anyone else), and each restart is a `SIGHUP` to the
//!   current instance, which starts its successor on the same socket, waits
//!   for its `READY=1`, sends `MAINPID=` and drains. The successors are not
//!   the supervisor's children: each is followed through a pidfd (its
//!   exit), and the one left at the end is ended by its PID.
//! * `rebind` (the contrast, without socket activation): each instance binds
//!   `127.0.0.1:PORT` itself; stop, then start. Its failures are reported,
//!   not judged.
//!
//! The load, per window (one steady window, then one window per restart,
//! each `RESTART_WINDOW` long, the restart starting 1 s in), is four `oha`
//! runs at once: 20 keep-alive connections at 300 req/s on `/`, 4 clients
//! opening a new connection per request at 100 req/s on `/`, 6 back-to-back
//! slow requests (`/slow?ms=1000`) and 4 back-to-back streams
//! (`/stream?chunks=5`, 0.8 s each). `oha -w` lets requests in flight at the
//! end of a window finish.
//!
//! Prints one table: per window and mode, failed requests (errors and
//! non-2xx) and the worst latency of each kind of request; the steady
//! window is the baseline. Exit code 0 iff `stop-start` and `in-place` had
//! zero failed requests, every instance exited 0 and became ready, and the
//! failed start left the old instance serving; 1 otherwise; 2 for a setup
//! problem.
//!
//! Environment: `AXUM_BIN` (default: built with `$CARGO build -p
//! tower-graceful-examples --bin axum`), `OHA` (default: `oha` on `PATH`,
//! then `~/.cargo/bin/oha`), `RESTART_COUNT` (default 5), `RESTART_WINDOW`
//! (seconds, default 4), `RESTART_PRE_DRAIN` (default `250ms`),
//! `RESTART_MODES` (comma-separated, default all three).
//!
//! Loopback only; every process started is ended by its PID (SIGTERM for
//! instances, then SIGKILL on drop; `oha` runs are bounded by `-z` and
//! killed on drop).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, UnixDatagram};
use tokio::process::{Child, Command};
use tower_graceful_tests::example::{signal, Exit};

const READY_LIMIT: Duration = Duration::from_secs(15);
const EXIT_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    StopStart,
    InPlace,
    Sighup,
    Rebind,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::StopStart => "stop-start",
            Mode::InPlace => "in-place",
            Mode::Sighup => "sighup",
            Mode::Rebind => "rebind",
        }
    }

    fn judged(self) -> bool {
        self != Mode::Rebind
    }
}

struct Setup {
    axum: PathBuf,
    oha: PathBuf,
    dir: PathBuf,
    count: usize,
    window: Duration,
    pre_drain: String,
}

fn setup_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("[restart] setup: {msg}");
    ExitCode::from(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let oha = match find_oha() {
        Some(p) => p,
        None => return setup_error("oha not found: cargo install oha, or set OHA"),
    };
    let axum = match std::env::var_os("AXUM_BIN") {
        Some(p) => PathBuf::from(p),
        None => match build_axum() {
            Ok(p) => p,
            Err(e) => return setup_error(e),
        },
    };
    let env_num = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    };
    let dir = std::env::temp_dir().join(format!("tower-graceful-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return setup_error(format!("{}: {e}", dir.display()));
    }
    let setup = Setup {
        axum,
        oha,
        dir: dir.clone(),
        count: env_num("RESTART_COUNT", 5) as usize,
        window: Duration::from_secs(env_num("RESTART_WINDOW", 4)),
        pre_drain: std::env::var("RESTART_PRE_DRAIN").unwrap_or_else(|_| "250ms".into()),
    };
    let modes: Vec<Mode> = match std::env::var("RESTART_MODES") {
        Ok(list) => list
            .split(',')
            .filter_map(|m| match m.trim() {
                "stop-start" => Some(Mode::StopStart),
                "in-place" => Some(Mode::InPlace),
                "sighup" => Some(Mode::Sighup),
                "rebind" => Some(Mode::Rebind),
                _ => None,
            })
            .collect(),
        Err(_) => vec![Mode::StopStart, Mode::InPlace, Mode::Sighup, Mode::Rebind],
    };

    let mut rows = Vec::new();
    let mut ok = true;
    for mode in modes {
        eprintln!("[restart] mode {}", mode.name());
        match run_mode(&setup, mode).await {
            Ok((mode_rows, problems)) => {
                let failed: usize = mode_rows.iter().map(|r: &Row| r.failed()).sum();
                if mode.judged() && (failed > 0 || !problems.is_empty()) {
                    ok = false;
                }
                for p in &problems {
                    eprintln!("[restart] {}: {p}", mode.name());
                }
                rows.extend(mode_rows);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return setup_error(format!("{}: {e}", mode.name()));
            }
        }
    }
    print_table(&rows, &setup);
    let _ = std::fs::remove_dir_all(&dir);
    if ok {
        println!("restart: zero failed requests in stop-start, in-place and sighup");
        ExitCode::SUCCESS
    } else {
        println!("restart: FAILED (see above)");
        ExitCode::from(1)
    }
}

fn find_oha() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OHA") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("oha"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".cargo/bin/oha");
        p.is_file().then_some(p)
    })
}

fn build_axum() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "-p",
            "tower-graceful-examples",
            "--bin",
            "axum",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the axum example failed".into());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "axum")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .ok_or_else(|| "cargo did not report the axum executable".into())
}

// -------------------------------------------------------------- instances --

/// One running instance of the example.
struct Instance {
    child: Child,
    pid: u32,
    notify: UnixDatagram,
    serial: usize,
}

impl Instance {
    /// Starts instance `serial`: with `socket`, as fd 3 with `LISTEN_*`;
    /// without, binding `PORT` itself. Its `NOTIFY_SOCKET` is its own.
    fn start(
        setup: &Setup,
        serial: usize,
        socket: Option<&std::net::TcpListener>,
        port: u16,
        extra_env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let notify_path = setup.dir.join(format!("notify-{serial}.sock"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        let mut cmd = match socket {
            Some(listener) => {
                // The listener goes in as stdin (a safe way to hand a child
                // an fd); the shell moves it to fd 3 and sets LISTEN_PID to
                // its own PID, which `exec` keeps for the example.
                let fd: OwnedFd = listener.try_clone()?.into();
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(
                        "exec 3<&0 0</dev/null; \
                         export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; \
                         exec \"$0\"",
                    )
                    .arg(&setup.axum)
                    .stdin(Stdio::from(fd));
                cmd
            }
            None => {
                let mut cmd = Command::new(&setup.axum);
                cmd.stdin(Stdio::null());
                cmd
            }
        };
        cmd.env("PORT", port.to_string())
            .env("NOTIFY_SOCKET", &notify_path)
            .env("GRACEFUL_PRE_DRAIN", &setup.pre_drain)
            .env("GRACEFUL_DEADLINE", "10s")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                setup.dir.join(format!("instance-{serial}.log")),
            )?))
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        let pid = child.id().expect("just spawned");
        Ok(Self {
            child,
            pid,
            notify,
            serial,
        })
    }

    /// Waits (bounded) for `READY=1`. `Err` if the instance exited first or
    /// the bound passed.
    async fn ready(&mut self) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut buf = vec![0u8; 4096];
        let wait = async {
            loop {
                let n = self
                    .notify
                    .recv(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    return Ok::<_, String>(());
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(READY_LIMIT, wait) => match r {
                Ok(Ok(())) => Ok(t0.elapsed()),
                Ok(Err(e)) => Err(format!("instance {}: notify socket: {e}", self.serial)),
                Err(_) => Err(format!("instance {}: no READY=1 within {READY_LIMIT:?}", self.serial)),
            },
            status = self.child.wait() => Err(format!(
                "instance {} exited before READY=1: {}",
                self.serial,
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
            )),
        }
    }

    /// Waits (bounded) for a `MAINPID=` on the instance's notify socket
    /// (sent by an instance that handed over to its successor) and returns
    /// it.
    async fn mainpid(&mut self) -> Result<u32, String> {
        let mut buf = vec![0u8; 4096];
        let wait = async {
            loop {
                let n = self
                    .notify
                    .recv(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(pid) = msg
                    .lines()
                    .find_map(|l| l.strip_prefix("MAINPID="))
                    .and_then(|p| p.trim().parse().ok())
                {
                    return Ok::<_, String>(pid);
                }
            }
        };
        match tokio::time::timeout(READY_LIMIT, wait).await {
            Ok(r) => r,
            Err(_) => Err(format!("no MAINPID= within {READY_LIMIT:?}")),
        }
    }

    /// Sends SIGTERM to the instance's PID (not yet reaped, so the PID is
    /// still its own).
    fn sigterm(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-s", "TERM", &self.pid.to_string()])
            .status();
    }

    /// Waits (bounded) for the exit; `Err` unless it exited 0.
    async fn exited(&mut self) -> Result<Duration, String> {
        let t0 = Instant::now();
        match tokio::time::timeout(EXIT_LIMIT, self.child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(t0.elapsed()),
            Ok(Ok(s)) => Err(format!("instance {} exited with {s}", self.serial)),
            Ok(Err(e)) => Err(format!("instance {}: wait: {e}", self.serial)),
            Err(_) => Err(format!(
                "instance {} did not exit within {EXIT_LIMIT:?}",
                self.serial
            )),
        }
    }
}

// ------------------------------------------------------------------ load --

#[derive(Clone, Copy)]
struct Kind {
    name: &'static str,
    path: &'static str,
    args: &'static [&'static str],
}

const KINDS: [Kind; 4] = [
    Kind {
        name: "keep-alive /",
        path: "/",
        args: &["-c", "20", "-q", "300"],
    },
    Kind {
        name: "new conn /",
        path: "/",
        args: &["-c", "4", "-q", "100", "--disable-keepalive"],
    },
    Kind {
        name: "slow 1 s",
        path: "/slow?ms=1000",
        args: &["-c", "6"],
    },
    Kind {
        name: "stream 0.8 s",
        path: "/stream?chunks=5",
        args: &["-c", "4"],
    },
];

#[derive(Default, Clone)]
struct Figures {
    ok: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    slowest: f64,
    p99: f64,
}

async fn load_window(setup: &Setup, port: u16, tag: &str) -> std::io::Result<Vec<Child>> {
    let mut runs = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let out = setup.dir.join(format!("oha-{tag}-{i}.json"));
        let child = Command::new(&setup.oha)
            .args(kind.args)
            .arg("-z")
            .arg(format!("{}s", setup.window.as_secs()))
            .args(["-w", "-t", "20s", "--no-tui", "--worker-threads", "1"])
            .args(["--output-format", "json", "-o"])
            .arg(&out)
            .arg(format!("http://127.0.0.1:{port}{}", kind.path))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        runs.push(child);
    }
    Ok(runs)
}

async fn finish_window(setup: &Setup, runs: Vec<Child>, tag: &str) -> Result<Vec<Figures>, String> {
    let mut figures = Vec::new();
    for (i, mut run) in runs.into_iter().enumerate() {
        let limit = setup.window + Duration::from_secs(30);
        match tokio::time::timeout(limit, run.wait()).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => return Err(format!("oha {tag}-{i} exited with {s}")),
            Ok(Err(e)) => return Err(format!("oha {tag}-{i}: {e}")),
            Err(_) => return Err(format!("oha {tag}-{i} did not finish within {limit:?}")),
        }
        let path = setup.dir.join(format!("oha-{tag}-{i}.json"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut f = Figures::default();
        if let Some(codes) = json["statusCodeDistribution"].as_object() {
            for (code, n) in codes {
                let n = n.as_u64().unwrap_or(0);
                if code.starts_with('2') {
                    f.ok += n;
                } else {
                    f.failed += n;
                    *f.errors.entry(format!("HTTP {code}")).or_default() += n;
                }
            }
        }
        if let Some(errors) = json["errorDistribution"].as_object() {
            for (e, n) in errors {
                let n = n.as_u64().unwrap_or(0);
                f.failed += n;
                *f.errors.entry(e.clone()).or_default() += n;
            }
        }
        f.slowest = json["summary"]["slowest"].as_f64().unwrap_or(0.0);
        f.p99 = json["latencyPercentiles"]["p99"].as_f64().unwrap_or(0.0);
        figures.push(f);
    }
    Ok(figures)
}

// ------------------------------------------------------------------ runs --

struct Row {
    mode: Mode,
    window: String,
    figures: Vec<Figures>,
    /// From SIGTERM of the old instance (or the start of the new one, in
    /// place) until the new one is ready and the old one has exited.
    restart: Option<Duration>,
}

impl Row {
    fn failed(&self) -> usize {
        self.figures.iter().map(|f| f.failed as usize).sum()
    }
}

async fn run_mode(setup: &Setup, mode: Mode) -> Result<(Vec<Row>, Vec<String>), String> {
    let mut problems = Vec::new();
    // The socket the supervisor holds for the whole run (stop-start,
    // in-place), with systemd's default backlog; for rebind, a free port.
    let (socket, port) = {
        let s = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        s.set_reuseaddr(true).map_err(|e| e.to_string())?;
        s.bind("127.0.0.1:0".parse().unwrap())
            .map_err(|e| e.to_string())?;
        let listener = s.listen(4096).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let std = listener.into_std().map_err(|e| e.to_string())?;
        // The instances set non-blocking themselves (the flag is shared).
        std.set_nonblocking(false).map_err(|e| e.to_string())?;
        if matches!(mode, Mode::Rebind | Mode::Sighup) {
            drop(std);
            (None, port)
        } else {
            (Some(std), port)
        }
    };
    let mut serial = 0;
    let mut start = |extra: &[(&str, &str)]| {
        serial += 1;
        Instance::start(setup, serial, socket.as_ref(), port, extra).map_err(|e| e.to_string())
    };

    let mut current = start(&[])?;
    current.ready().await?;
    // Sighup: the instance serving now, when it is not `current` (a
    // successor, which is not this process's child).
    let mut successor: Option<u32> = None;
    let mut rows = Vec::new();

    // Steady state.
    let tag = format!("{}-steady", mode.name());
    let runs = load_window(setup, port, &tag)
        .await
        .map_err(|e| e.to_string())?;
    let figures = finish_window(setup, runs, &tag).await?;
    rows.push(Row {
        mode,
        window: "steady".into(),
        figures,
        restart: None,
    });

    // In place: a new instance that fails to start leaves the old one serving.
    if mode == Mode::InPlace {
        let tag = format!("{}-failed-start", mode.name());
        let runs = load_window(setup, port, &tag)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut bad = start(&[("GRACEFUL_DEADLINE", "not a duration")])?;
        match bad.ready().await {
            Ok(_) => problems.push("the misconfigured instance became ready".into()),
            Err(e) if e.contains("exited before READY=1") => {}
            Err(e) => problems.push(e),
        }
        // `current` is never signalled: it keeps serving the window.
        let figures = finish_window(setup, runs, &tag).await?;
        if current.child.try_wait().ok().flatten().is_some() {
            problems.push("the old instance died during the failed start".into());
        }
        rows.push(Row {
            mode,
            window: "failed start".into(),
            figures,
            restart: None,
        });
    }

    for n in 1..=setup.count {
        let tag = format!("{}-{n}", mode.name());
        let runs = load_window(setup, port, &tag)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        let outcome: Result<(), String> = async {
            match mode {
                Mode::StopStart | Mode::Rebind => {
                    current.sigterm();
                    current.exited().await?;
                    current = start(&[])?;
                    current.ready().await?;
                }
                Mode::InPlace => {
                    let mut next = start(&[])?;
                    next.ready().await?;
                    let mut old = std::mem::replace(&mut current, next);
                    old.sigterm();
                    old.exited().await?;
                }
                Mode::Sighup => {
                    let old = successor.unwrap_or(current.pid);
                    // Followed before the signal, so its exit cannot be
                    // missed (and its PID not reused meanwhile).
                    let old_exit = Exit::follow(old)?;
                    signal(old, "HUP");
                    // The successor inherits the first instance's
                    // NOTIFY_SOCKET; the old one sends MAINPID= once the
                    // successor is ready.
                    let next = current.mainpid().await?;
                    if next == old {
                        return Err(format!("MAINPID={next} names the old instance"));
                    }
                    if successor.is_none() {
                        current.exited().await?;
                    } else {
                        old_exit.exited(EXIT_LIMIT).await?;
                    }
                    successor = Some(next);
                }
            }
            Ok(())
        }
        .await;
        let restart = t0.elapsed();
        if let Err(e) = outcome {
            problems.push(format!("restart {n}: {e}"));
        }
        let figures = finish_window(setup, runs, &tag).await?;
        rows.push(Row {
            mode,
            window: format!("restart {n}"),
            figures,
            restart: Some(restart),
        });
    }
    match successor {
        Some(pid) => {
            let exit = Exit::follow(pid)?;
            signal(pid, "TERM");
            if let Err(e) = exit.exited(EXIT_LIMIT).await {
                problems.push(e);
            }
        }
        None => {
            current.sigterm();
            if let Err(e) = current.exited().await {
                problems.push(e);
            }
        }
    }
    Ok((rows, problems))
}

fn ms(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else {
        format!("{:.1} ms", secs * 1e3)
    }
}

fn print_table(rows: &[Row], setup: &Setup) {
    println!();
    println!(
        "restart under load: 1 instance, no balancer, {} restarts per mode, {} s windows (restart 1 s in), pre-drain {}",
        setup.count,
        setup.window.as_secs(),
        setup.pre_drain
    );
    print!("| mode | window | restart took | failed |");
    for k in KINDS {
        print!(" worst {} |", k.name);
    }
    println!();
    print!("|---|---|---|---|");
    for _ in KINDS {
        print!("---|");
    }
    println!();
    for r in rows {
        print!(
            "| {} | {} | {} | {} |",
            r.mode.name(),
            r.window,
            r.restart.map_or("–".into(), |d| ms(d.as_secs_f64())),
            r.failed()
        );
        for f in &r.figures {
            print!(" {} (p99 {}) |", ms(f.slowest), ms(f.p99));
        }
        println!();
    }
    let mut any = false;
    for r in rows {
        for (k, f) in KINDS.iter().zip(&r.figures) {
            for (e, n) in &f.errors {
                if !any {
                    println!("\nfailures:");
                    any = true;
                }
                println!("  {} {} {}: {n} × {e}", r.mode.name(), r.window, k.name);
            }
        }
    }
    println!();
}
