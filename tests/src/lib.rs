//! Helpers for end-to-end tests: the workspace's binaries run as separate processes, the way
//! a container runs them, and the four services in this process.
//!
//! - [`binary`]: the path of a workspace binary, built (or brought up to date) first with
//!   `cargo build`, so a test never runs a stale executable.
//! - [`free_addr`]: a loopback address with a port nothing listens on right now.
//! - [`ServiceProcess`]: a spawned binary with its stdout and stderr captured; waits for
//!   grpc.health.v1 to report SERVING (or for given output), stops it with SIGTERM and
//!   waits for its exit within a bound, and kills it when dropped so a failing test leaves
//!   nothing running.
//! - [`process_suite`]: the four services as processes, the faults done to them, loads of
//!   gifts and the checks that hold after them.
//! - [`in_process`]: the four services in this process, for tests that need no processes.
//!
//! Limits: [`free_addr`] is check-then-use (another process may take the port between the
//! check and the service's bind; the service then fails to start, loudly). SIGTERM is sent
//! with the `kill` command, so [`ServiceProcess::terminate`] is Unix-only in effect; on
//! other platforms it kills the process.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod in_process;
pub mod process_suite;

/// Longest a service may take from spawn to SERVING before a test gives up on it.
pub const START_BOUND: Duration = Duration::from_secs(60);

/// Longest a process may take to exit (after SIGTERM, or on its own) before a test gives up.
pub const EXIT_BOUND: Duration = Duration::from_secs(30);

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// Where this test executable's cargo build puts binaries, and what to tell `cargo build`
/// to put them in the same place.
#[derive(Debug)]
struct BuildDir {
    /// `<target>/[<triple>/]<profile-dir>`: binaries land here.
    bin_dir: PathBuf,
    target_dir: PathBuf,
    triple: Option<String>,
    profile_dir: String,
}

impl BuildDir {
    /// Derived from the running test executable, `<target>/[<triple>/]<profile>/deps/<test>`.
    fn of_current_exe() -> BuildDir {
        let exe = std::env::current_exe().expect("the test executable's path is known");
        let deps = exe.parent().expect("test executable is in a directory");
        let bin_dir = if deps.file_name().is_some_and(|n| n == "deps") {
            deps.parent().expect("deps/ has a parent").to_path_buf()
        } else {
            deps.to_path_buf()
        };
        let profile_dir = file_name(&bin_dir);
        let above = bin_dir.parent().expect("profile directory has a parent");
        // The target directory carries CACHEDIR.TAG or .rustc_info.json (cargo skips the
        // tag when the directory existed before it); anything else above the profile that
        // looks like a triple is a `--target <triple>` directory inside the target directory.
        let is_target_dir = above.join("CACHEDIR.TAG").exists()
            || above.join(".rustc_info.json").exists()
            || !file_name(above).contains('-');
        let (target_dir, triple) = if is_target_dir {
            (above.to_path_buf(), None)
        } else {
            let target_dir = above.parent().expect("triple directory has a parent");
            (target_dir.to_path_buf(), Some(file_name(above)))
        };
        BuildDir {
            bin_dir,
            target_dir,
            triple,
            profile_dir,
        }
    }

    /// The `cargo build` flags that select this directory's profile.
    fn profile_args(&self) -> Vec<String> {
        match self.profile_dir.as_str() {
            "debug" => vec![],
            "release" => vec!["--release".into()],
            other => vec!["--profile".into(), other.into()],
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_else(|| panic!("{} has no file name", path.display()))
        .to_string_lossy()
        .into_owned()
}

/// The path of binary `name` of workspace package `package`, in the same target directory
/// and profile as the running test.
///
/// `CARGO_BIN_EXE_<name>` only exists for binaries of the test's own package, so this runs
/// `cargo build -p <package> --bin <name>` (with the cargo of `$CARGO`) once per test
/// process: a no-op when the binary is up to date, a rebuild when its sources changed.
/// Outside cargo (`$CARGO` unset, the test executable run by hand) an existing binary is
/// used as it is. Panics with cargo's output when the build fails.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held for the build, so tests of one process wanting the same binary build it once.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = format!("{package}/{name}");
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let dir = BuildDir::of_current_exe();
    let path = dir
        .bin_dir
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    match std::env::var_os("CARGO") {
        Some(cargo) => build(&cargo, &dir, package, name),
        None if path.exists() => {}
        None => panic!(
            "{} does not exist and $CARGO is not set to build it; run the tests with \
             `cargo test` or build it first: cargo build -p {package} --bin {name}",
            path.display()
        ),
    }
    assert!(
        path.exists(),
        "cargo built {package}'s {name} but {} does not exist",
        path.display()
    );
    built.insert(key, path.clone());
    path
}

fn build(cargo: &std::ffi::OsStr, dir: &BuildDir, package: &str, name: &str) {
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .args(dir.profile_args())
        .arg("--target-dir")
        .arg(&dir.target_dir);
    if let Some(triple) = &dir.triple {
        command.args(["--target", triple]);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loopback address whose port nothing listens on at the time of the call: bind port 0,
/// read the port the OS chose, release it.
pub fn free_addr() -> SocketAddr {
    ovation_testkit::free_addr()
}

/// Why a [`ServiceProcess`] did not do what was awaited.
#[derive(Debug)]
pub enum ProcessError {
    /// It exited (while it was expected to start serving).
    Exited { status: ExitStatus, stderr: String },
    /// The bound passed without the awaited event.
    TimedOut {
        waited_for: &'static str,
        bound: Duration,
        stderr: String,
    },
    /// Spawning, signalling or waiting failed.
    Io(std::io::Error),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Exited { status, stderr } => {
                write!(f, "process exited ({status}); its stderr:\n{stderr}")
            }
            ProcessError::TimedOut {
                waited_for,
                bound,
                stderr,
            } => write!(
                f,
                "process did not {waited_for} within {bound:?}; its stderr so far:\n{stderr}"
            ),
            ProcessError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProcessError {}

impl From<std::io::Error> for ProcessError {
    fn from(e: std::io::Error) -> Self {
        ProcessError::Io(e)
    }
}

/// One captured output stream: the bytes read so far, a signal bumped on every read (and
/// closed at the end of the stream), and the task reading it.
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    updates: watch::Receiver<()>,
    reader: Option<JoinHandle<()>>,
}

impl Captured {
    fn start(stream: Option<impl AsyncRead + Unpin + Send + 'static>) -> Captured {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (tx, updates) = watch::channel(());
        let reader = stream.map(|mut stream| {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    lock(&bytes).extend_from_slice(&buf[..n]);
                    tx.send_replace(());
                }
                // `tx` drops here: waiters learn the stream has ended.
            })
        });
        Captured {
            bytes,
            updates,
            reader,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.bytes)).into_owned()
    }

    /// Waits until the text read so far contains `needle`; false if the stream ends first.
    async fn contains_eventually(&self, needle: &str) -> bool {
        let mut updates = self.updates.clone();
        loop {
            if self.text().contains(needle) {
                return true;
            }
            if updates.changed().await.is_err() {
                return self.text().contains(needle);
            }
        }
    }

    /// Waits until the stream is at its end (the process closed it), up to `bound`.
    async fn finish(&mut self, bound: Duration) {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(bound, reader).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A binary running as a child process, its stdout and stderr captured. Killed when
/// dropped. Must be created inside a Tokio runtime (the output readers are tasks).
pub struct ServiceProcess {
    child: Child,
    stdout: Captured,
    stderr: Captured,
    status: Option<ExitStatus>,
}

impl ServiceProcess {
    /// Spawns `command` with stdin closed and stdout/stderr captured.
    pub fn spawn(mut command: Command) -> Result<ServiceProcess, ProcessError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdout = Captured::start(child.stdout.take());
        let stderr = Captured::start(child.stderr.take());
        Ok(ServiceProcess {
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// Spawns `command` and waits (up to [`START_BOUND`]) until the service at `addr`
    /// reports SERVING. Panics, showing the service's stderr, if it does not.
    pub async fn start(command: Command, addr: SocketAddr) -> ServiceProcess {
        let description = format!("{command:?}");
        let mut process = ServiceProcess::spawn(command)
            .unwrap_or_else(|e| panic!("cannot spawn {description}: {e}"));
        if let Err(e) = process.wait_serving(addr, START_BOUND).await {
            panic!("{description} did not start serving on {addr}: {e}");
        }
        process
    }

    /// The OS process id, while the process has not been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until grpc.health.v1 at `addr` answers SERVING; fails at once if the process
    /// exits first, or when `bound` passes.
    pub async fn wait_serving(
        &mut self,
        addr: SocketAddr,
        bound: Duration,
    ) -> Result<(), ProcessError> {
        let ready = async {
            while !ovation_testkit::serving(addr).await {
                // Between health checks: the check itself is the synchronisation.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let outcome = tokio::time::timeout(bound, async {
            tokio::select! {
                () = ready => Ok(()),
                status = self.child.wait() => Err(status),
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => {
                let status = status?;
                self.status = Some(status);
                self.finish_output(EXIT_BOUND).await;
                Err(ProcessError::Exited {
                    status,
                    stderr: self.stderr(),
                })
            }
            Err(_) => Err(ProcessError::TimedOut {
                waited_for: "report SERVING",
                bound,
                stderr: self.stderr(),
            }),
        }
    }

    /// Sends SIGTERM and waits up to `bound` for the process to exit; returns its exit
    /// status. Returns the status at once if it has already exited.
    pub async fn terminate(&mut self, bound: Duration) -> Result<ExitStatus, ProcessError> {
        if let Some(status) = self.exited(bound).await? {
            return Ok(status);
        }
        self.send_sigterm()?;
        self.wait_exit(bound).await
    }

    /// Kills the process the hard way (SIGKILL on Unix: no handler runs, nothing is
    /// flushed, in-flight calls and transactions are cut wherever they are) and waits up to
    /// `bound` for it to be reaped; returns its exit status. Returns the status at once if
    /// it has already exited.
    pub async fn kill_hard(&mut self, bound: Duration) -> Result<ExitStatus, ProcessError> {
        if let Some(status) = self.exited(bound).await? {
            return Ok(status);
        }
        // tokio's `start_kill` is SIGKILL on Unix (TerminateProcess elsewhere).
        self.child.start_kill()?;
        self.wait_exit(bound).await
    }

    /// The exit status if the process has already exited (its output then read to the end,
    /// up to `bound`), without waiting for it.
    async fn exited(&mut self, bound: Duration) -> Result<Option<ExitStatus>, ProcessError> {
        if self.status.is_none()
            && let Some(status) = self.child.try_wait()?
        {
            self.status = Some(status);
            self.finish_output(bound).await;
        }
        Ok(self.status)
    }

    #[cfg(unix)]
    fn send_sigterm(&mut self) -> Result<(), ProcessError> {
        let Some(pid) = self.child.id() else {
            return Ok(()); // already reaped: nothing to signal
        };
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(ProcessError::Io(std::io::Error::other(format!(
                "`kill -TERM {pid}` failed ({status})"
            ))))
        }
    }

    #[cfg(not(unix))]
    fn send_sigterm(&mut self) -> Result<(), ProcessError> {
        Ok(self.child.start_kill()?)
    }

    /// Waits up to `bound` for the process to exit on its own; returns its exit status,
    /// with its stdout and stderr read to the end.
    pub async fn wait_exit(&mut self, bound: Duration) -> Result<ExitStatus, ProcessError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                self.status = Some(status);
                self.finish_output(bound).await;
                Ok(status)
            }
            Err(_) => Err(ProcessError::TimedOut {
                waited_for: "exit",
                bound,
                stderr: self.stderr(),
            }),
        }
    }

    async fn finish_output(&mut self, bound: Duration) {
        self.stdout.finish(bound).await;
        self.stderr.finish(bound).await;
    }

    /// Waits up to `bound` until the process has written `needle` to stdout.
    pub async fn wait_for_stdout(&self, needle: &str, bound: Duration) -> Result<(), ProcessError> {
        self.wait_for_output(&self.stdout, "stdout", needle, bound)
            .await
    }

    /// Waits up to `bound` until the process has written `needle` to stderr.
    pub async fn wait_for_stderr(&self, needle: &str, bound: Duration) -> Result<(), ProcessError> {
        self.wait_for_output(&self.stderr, "stderr", needle, bound)
            .await
    }

    async fn wait_for_output(
        &self,
        stream: &Captured,
        stream_name: &'static str,
        needle: &str,
        bound: Duration,
    ) -> Result<(), ProcessError> {
        match tokio::time::timeout(bound, stream.contains_eventually(needle)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ProcessError::Io(std::io::Error::other(format!(
                "{stream_name} ended without {needle:?}; stderr:\n{}",
                self.stderr()
            )))),
            Err(_) => Err(ProcessError::TimedOut {
                waited_for: "write the awaited output",
                bound,
                stderr: self.stderr(),
            }),
        }
    }

    /// Everything the process wrote to stdout so far (all of it once it has exited).
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything the process wrote to stderr so far (all of it once it has exited).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }
}

impl fmt::Debug for ServiceProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceProcess")
            .field("id", &self.child.id())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addr_is_loopback_with_a_real_port() {
        let addr = free_addr();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }

    #[test]
    fn build_dir_is_where_this_test_runs() {
        let dir = BuildDir::of_current_exe();
        let exe = std::env::current_exe().unwrap();
        assert!(
            exe.starts_with(&dir.bin_dir),
            "{dir:?} vs {}",
            exe.display()
        );
        assert!(
            dir.target_dir.join("CACHEDIR.TAG").exists()
                || dir.target_dir.join(".rustc_info.json").exists(),
            "{dir:?}"
        );
    }

    #[tokio::test]
    async fn a_process_that_exits_is_reported_with_its_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo 'going away' >&2; exit 3"]);
        let mut process = ServiceProcess::spawn(command).unwrap();
        let status = process.wait_exit(EXIT_BOUND).await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(process.stdout(), "out\n");
        assert_eq!(process.stderr(), "going away\n");
    }

    #[tokio::test]
    async fn wait_serving_fails_when_the_process_exits_first() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'no database' >&2; exit 1"]);
        let mut process = ServiceProcess::spawn(command).unwrap();
        match process.wait_serving(free_addr(), START_BOUND).await {
            Err(ProcessError::Exited { status, stderr }) => {
                assert_eq!(status.code(), Some(1));
                assert_eq!(stderr, "no database\n");
            }
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn terminate_sends_sigterm() {
        let mut command = Command::new("sh");
        // Exits 0 on SIGTERM; `wait` lets the trap run while sleep is a child.
        command.args([
            "-c",
            "sleep 600 >/dev/null 2>&1 & trap 'kill $!; exit 0' TERM; echo ready; wait",
        ]);
        let mut process = ServiceProcess::spawn(command).unwrap();
        // The script says "ready" once its trap is installed.
        process.wait_for_stdout("ready", START_BOUND).await.unwrap();
        let status = process.terminate(EXIT_BOUND).await.unwrap();
        assert!(status.success(), "{status}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn kill_hard_sends_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let mut command = Command::new("sh");
        // Ignores SIGTERM: only SIGKILL stops it.
        command.args(["-c", "trap '' TERM; echo ready; exec sleep 600"]);
        let mut process = ServiceProcess::spawn(command).unwrap();
        process.wait_for_stdout("ready", START_BOUND).await.unwrap();
        let status = process.kill_hard(EXIT_BOUND).await.unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }
}
