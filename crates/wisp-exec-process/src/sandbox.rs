//! What confines a function's process.
//!
//! Always: its own session and process group (a timeout or a drop kills
//! every process it started), death with the node (`PR_SET_PDEATHSIG`), no
//! core dumps, a file-descriptor limit, a cleared environment.
//!
//! With the sandbox (the node runs as root and finds the memory and pids
//! cgroup controllers, v1 or v2): its own cgroup per process with the
//! function's memory limit (exceeding it → killed, outcome
//! `memory_limit`) and a pids limit (a fork bomb stops there), and its
//! own IPC and UTS namespaces.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Processes (and threads) one function process may have at once.
pub const PIDS_MAX: u32 = 256;

#[derive(Debug)]
pub struct Sandbox {
    /// cgroup directories to create cells under: (controller root, is v2).
    memory: PathBuf,
    pids: PathBuf,
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
        for d in [&memory, &pids] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        if v2 {
            // Let cells under /sys/fs/cgroup/wisp use both controllers.
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids");
            let _ = std::fs::write(memory.join("cgroup.subtree_control"), "+memory +pids");
        }
        Ok(Self {
            memory,
            pids,
            v2,
            work_root: work_root.to_path_buf(),
        })
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

    /// Removes the cgroups and the private `/tmp`.
    pub fn remove(self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Sets up the child side: session, death signal, rlimits, cgroups and
/// namespaces, between fork and exec.
pub fn prepare(cmd: &mut tokio::process::Command, cell: Option<&Cell>, _code_dir: &Path) {
    let procs: Vec<CString> = cell.map(|c| c.procs.clone()).unwrap_or_default();
    let sandboxed = cell.is_some();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
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
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if sandboxed && libc::unshare(libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
