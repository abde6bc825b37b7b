//! What confines a function's process.
//!
//! Always: its own session and process group (a timeout or a drop kills
//! every process it started), death with the node (`PR_SET_PDEATHSIG`), no
//! core dumps, a file-descriptor limit, a cleared environment.
//!
//! With the sandbox (the node runs as root and finds the memory and pids
//! cgroup controllers, v1 or v2):
//! - its own cgroup per process with the function's memory limit
//!   (exceeding it → killed, outcome `memory_limit`), a pids limit (a
//!   fork bomb stops there) and, where the cpu controller is found, a CPU
//!   weight in proportion to its memory (as on Lambda);
//! - its own PID namespace (it sees and can signal only its own processes;
//!   when it exits, everything it started dies), and IPC, UTS and mount
//!   namespaces;
//! - in its mount namespace: the whole filesystem read-only, the function's
//!   code read-only at `/var/task`, a private `/tmp` (512 MiB tmpfs) and
//!   `/dev/shm` (64 MiB), its own `/proc`, and the node's data directory
//!   hidden under an empty read-only tmpfs;
//! - the unprivileged user `nobody` (65534), no supplementary groups, and
//!   `no_new_privs` (setuid binaries cannot raise it).
//!
//! - without `allow_outbound` in its spec, its own network namespace with
//!   loopback only (where its Runtime API listens): no connection leaves
//!   it, and nothing on the node's loopback is reachable.
//!
//! Not isolated: a process whose spec allows any outbound host shares the
//! node's network (the allow-list filters hosts for Wasm functions only);
//! CPU time is shared by weight, not capped.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Processes (and threads) one function process may have at once.
pub const PIDS_MAX: u32 = 256;
/// Where the code appears inside the sandbox (as on Lambda).
pub const TASK_ROOT: &str = "/var/task";
/// The unprivileged user and group sandboxed processes run as.
const NOBODY: u32 = 65534;

#[derive(Debug)]
pub struct Sandbox {
    /// cgroup directories to create cells under: (controller root, is v2).
    memory: PathBuf,
    pids: PathBuf,
    /// The cpu controller's directory, where the node finds one (v1), or
    /// whether cells get `cpu.weight` (v2).
    cpu: Option<PathBuf>,
    v2: bool,
    work_root: PathBuf,
}

/// One process's cgroups and private `/tmp`.
#[derive(Debug)]
pub struct Cell {
    dirs: Vec<PathBuf>,
    procs: Vec<CString>,
    memory_dir: PathBuf,
    v2: bool,
    pub tmp: PathBuf,
}

impl Sandbox {
    pub fn detect(work_root: &Path) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the node does not run as root".into());
        }
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        let (memory, pids) = if v2 {
            let root = PathBuf::from("/sys/fs/cgroup/wisp");
            (root.clone(), root)
        } else {
            (
                PathBuf::from("/sys/fs/cgroup/memory/wisp"),
                PathBuf::from("/sys/fs/cgroup/pids/wisp"),
            )
        };
        for d in [&memory, &pids, &PathBuf::from(TASK_ROOT)] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        if v2 {
            // Let cells under /sys/fs/cgroup/wisp use the controllers.
            for c in ["+memory +pids", "+cpu"] {
                let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", c);
                let _ = std::fs::write(memory.join("cgroup.subtree_control"), c);
            }
        }
        // CPU shares are best effort: without the controller, processes
        // compete for CPU like any other.
        let cpu = if v2 {
            std::fs::read_to_string(memory.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
                .then(|| memory.clone())
        } else {
            let d = PathBuf::from("/sys/fs/cgroup/cpu/wisp");
            std::fs::create_dir_all(&d).is_ok().then_some(d)
        };
        let sb = Self {
            memory,
            pids,
            cpu,
            v2,
            work_root: work_root.to_path_buf(),
        };
        sb.remove_stale();
        Ok(sb)
    }

    /// Removes the cells of nodes that are gone (a node killed with
    /// `kill -9` cannot remove its own). A cell's name ends with the pid of
    /// the node that made it.
    fn remove_stale(&self) {
        let mut roots = if self.v2 {
            vec![&self.memory]
        } else {
            vec![&self.memory, &self.pids]
        };
        if let Some(cpu) = self.cpu.as_ref().filter(|_| !self.v2) {
            roots.push(cpu);
        }
        for root in roots {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                    continue;
                };
                if e.path().is_dir() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir(e.path());
                    let _ = std::fs::remove_dir_all(self.work_root.join(&name));
                }
            }
        }
    }

    pub fn cell(&self, name: &str, memory_mb: u32) -> Result<Cell, String> {
        let bytes = (memory_mb as u64) << 20;
        let write = |p: PathBuf, v: String| {
            std::fs::write(&p, v).map_err(|e| format!("writing {}: {e}", p.display()))
        };
        let mut dirs = Vec::new();
        let mem = self.memory.join(name);
        std::fs::create_dir_all(&mem).map_err(|e| format!("creating {}: {e}", mem.display()))?;
        dirs.push(mem.clone());
        if self.v2 {
            write(mem.join("memory.max"), bytes.to_string())?;
            let _ = write(mem.join("memory.swap.max"), "0".into());
            write(mem.join("pids.max"), PIDS_MAX.to_string())?;
        } else {
            write(mem.join("memory.limit_in_bytes"), bytes.to_string())?;
            // No swapping around the limit, where the kernel allows it.
            let _ = write(mem.join("memory.memsw.limit_in_bytes"), bytes.to_string());
            let _ = write(mem.join("memory.swappiness"), "0".into());
            let pids = self.pids.join(name);
            std::fs::create_dir_all(&pids)
                .map_err(|e| format!("creating {}: {e}", pids.display()))?;
            write(pids.join("pids.max"), PIDS_MAX.to_string())?;
            dirs.push(pids);
        }
        // CPU in proportion to memory, as on Lambda (1,769 MB = one vCPU):
        // a 128 MB function gets 1/14 of a core's weight when the CPU is
        // contended, and the node's own threads (weight 1,024) come first.
        match &self.cpu {
            Some(_) if self.v2 => {
                let weight = (memory_mb as u64 * 100 / 1769).clamp(1, 10_000);
                let _ = write(mem.join("cpu.weight"), weight.to_string());
            }
            Some(root) => {
                let shares = (memory_mb as u64 * 1024 / 1769).clamp(2, 262_144);
                let cpu = root.join(name);
                if std::fs::create_dir_all(&cpu).is_ok()
                    && write(cpu.join("cpu.shares"), shares.to_string()).is_ok()
                {
                    dirs.push(cpu);
                }
            }
            None => {}
        }
        let procs = dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").to_string_lossy().as_bytes()).ok())
            .collect();
        let tmp = self.work_root.join(name);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        Ok(Cell {
            dirs,
            procs,
            memory_dir: mem,
            v2: self.v2,
            tmp,
        })
    }
}

impl Cell {
    /// Whether the kernel killed the cell's processes for memory.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill ")
        } else {
            ("memory.oom_control", "oom_kill ")
        };
        let text = std::fs::read_to_string(self.memory_dir.join(file)).unwrap_or_default();
        if let Some(n) = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return n > 0;
        }
        // Older v1 kernels have no oom_kill counter: the limit was hit.
        std::fs::read_to_string(self.memory_dir.join("memory.failcnt"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    }

    /// Removes the cgroups (once their processes are gone: retried for up
    /// to 5 s) and the cell's directory.
    pub fn remove(mut self) {
        for _ in 0..50 {
            self.dirs
                .retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
            if self.dirs.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Everything the child needs, made before fork (no allocation after it).
struct Plan {
    procs: Vec<CString>,
    code: CString,
    task: CString,
    hide: Vec<CString>,
    root: CString,
    tmp: CString,
    shm: CString,
    proc_dir: CString,
    tmpfs: CString,
    proc_fs: CString,
    tmp_opts: CString,
    shm_opts: CString,
    hide_opts: CString,
}

/// Sets up the child side: session, death signal, rlimits, and with a cell
/// the cgroups, namespaces, mounts and user, between fork and exec.
pub fn prepare(
    cmd: &mut tokio::process::Command,
    cell: Option<&Cell>,
    code_dir: &Path,
    hide: &[PathBuf],
) {
    let plan = cell.map(|cell| Plan {
        procs: cell.procs.clone(),
        code: c(code_dir),
        task: cs(TASK_ROOT),
        hide: hide.iter().map(|p| c(p)).collect(),
        root: cs("/"),
        tmp: cs("/tmp"),
        shm: cs("/dev/shm"),
        proc_dir: cs("/proc"),
        tmpfs: cs("tmpfs"),
        proc_fs: cs("proc"),
        tmp_opts: cs("size=512m,mode=1777"),
        shm_opts: cs("size=64m,mode=1777"),
        hide_opts: cs("size=4k,mode=000"),
    });
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setsid())?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &core);
            let files = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &files);
            let Some(p) = &plan else { return Ok(()) };
            for f in &p.procs {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd)?;
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            check(libc::unshare(
                libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWPID,
            ))?;
            // The new PID namespace holds this process's children only: fork
            // once; this process waits and passes on how the function ended.
            let pid = libc::fork();
            check(pid)?;
            if pid > 0 {
                // Only the exec'd grandchild may hold the descriptors the
                // spawner waits on (its exec-error pipe closes on exec):
                // this waiting process keeps none beyond stdio.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                let mut status = 0;
                loop {
                    let r = libc::waitpid(pid, &mut status, 0);
                    if r == pid || (r < 0 && *libc::__errno_location() != libc::EINTR) {
                        break;
                    }
                }
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                libc::_exit(code);
            }
            // PID 1 of the new namespace from here on.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let none = std::ptr::null();
            check(libc::mount(
                none,
                p.root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ))?;
            check(libc::mount(
                p.code.as_ptr(),
                p.task.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                none.cast(),
            ))?;
            check(libc::mount(
                none,
                p.task.as_ptr(),
                none,
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                none.cast(),
            ))?;
            check(libc::mount(
                none,
                p.root.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                none.cast(),
            ))?;
            for h in &p.hide {
                check(libc::mount(
                    p.tmpfs.as_ptr(),
                    h.as_ptr(),
                    p.tmpfs.as_ptr(),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    p.hide_opts.as_ptr().cast(),
                ))?;
            }
            check(libc::mount(
                p.tmpfs.as_ptr(),
                p.tmp.as_ptr(),
                p.tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                p.tmp_opts.as_ptr().cast(),
            ))?;
            check(libc::mount(
                p.tmpfs.as_ptr(),
                p.shm.as_ptr(),
                p.tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                p.shm_opts.as_ptr().cast(),
            ))?;
            check(libc::mount(
                p.proc_fs.as_ptr(),
                p.proc_dir.as_ptr(),
                p.proc_fs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                none.cast(),
            ))?;
            check(libc::chdir(p.task.as_ptr()))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(NOBODY))?;
            check(libc::setuid(NOBODY))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            Ok(())
        });
    }
}
