//! Child processes of an experiment (VMMs, QEMU): each started by its own
//! pid with `PR_SET_PDEATHSIG`, so it dies with the runner, and killed and
//! reaped when dropped.

use crate::error::RunnerError;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process that does not outlive its owner.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
}

impl ChildProcess {
    /// Starts `cmd` as `name` (used in messages).
    pub fn spawn(name: impl Into<String>, cmd: Command) -> Result<Self, RunnerError> {
        Self::spawn_in(name, cmd, None)
    }

    /// Starts `cmd` as `name`, inside network namespace `netns` when given
    /// (a simulated host: all its sockets and TAPs live there).
    pub fn spawn_in(name: impl Into<String>, mut cmd: Command, netns: Option<&str>) -> Result<Self, RunnerError> {
        let name = name.into();
        let ns = match netns {
            Some(ns) => Some(
                std::fs::File::open(std::path::Path::new("/var/run/netns").join(ns))
                    .map_err(RunnerError::io(format!("opening network namespace {ns} for the {name}")))?,
            ),
            None => None,
        };
        let ns_fd = ns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl, setns, sigemptyset and sigprocmask, which are
        // async-signal-safe; `ns_fd` stays open in the parent (`ns`) until
        // spawn returns. The parent blocks the termination signals
        // (`netns::remove_on_signal`); the child must get them again.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(fd) = ns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(RunnerError::io(format!("starting the {name}")))?;
        drop(ns);
        Ok(Self { name, child })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself (for its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// `Some(description)` once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(format!("the {} exited ({s}); see its messages above", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("cannot watch the {}: {e}", self.name)),
        }
    }

    /// Waits up to `limit` for it to exit; its exit code (`None`: still
    /// running, or ended by a signal).
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills it (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
