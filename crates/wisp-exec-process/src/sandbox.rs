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
//!   code read-only at `/var/task` (mounted at start, or for a prestarted
//!   interpreter when a function takes it: [`inject_code`]), a private
//!   `/tmp` (512 MiB tmpfs) and
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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    cpu_dir: Option<PathBuf>,
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
        fast_cgroup_moves(v2);
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

    /// A new cell: its cgroups (with `memory_mb`'s limits) and private
    /// `/tmp` directory.
    pub fn cell(&self, name: &str, memory_mb: u32) -> Result<Cell, String> {
        let mut dirs = Vec::new();
        let mem = self.memory.join(name);
        std::fs::create_dir_all(&mem).map_err(|e| format!("creating {}: {e}", mem.display()))?;
        dirs.push(mem.clone());
        if self.v2 {
            write(mem.join("pids.max"), PIDS_MAX.to_string())?;
        } else {
            let pids = self.pids.join(name);
            std::fs::create_dir_all(&pids)
                .map_err(|e| format!("creating {}: {e}", pids.display()))?;
            write(pids.join("pids.max"), PIDS_MAX.to_string())?;
            dirs.push(pids);
        }
        let mut cpu = None;
        match &self.cpu {
            Some(_) if self.v2 => cpu = Some(mem.clone()),
            Some(root) => {
                let d = root.join(name);
                if std::fs::create_dir_all(&d).is_ok() {
                    dirs.push(d.clone());
                    cpu = Some(d);
                }
            }
            None => {}
        }
        let procs = procs_files(&dirs);
        let tmp = self.work_root.join(name);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let cell = Cell {
            dirs,
            procs,
            memory_dir: mem,
            cpu_dir: cpu,
            v2: self.v2,
            tmp,
        };
        cell.set_limits(memory_mb)?;
        Ok(cell)
    }
}

/// The `cgroup.procs` files of a cell's cgroups, ready for the child side
/// (no allocation after fork).
fn procs_files(dirs: &[PathBuf]) -> Vec<CString> {
    dirs.iter()
        .filter_map(|d| CString::new(d.join("cgroup.procs").to_string_lossy().as_bytes()).ok())
        .collect()
}

fn write(p: PathBuf, v: String) -> Result<(), String> {
    std::fs::write(&p, v).map_err(|e| format!("writing {}: {e}", p.display()))
}

impl Cell {
    /// Renames the cell's cgroups (a stem cell taken by a function gets
    /// the function's name, so operators see whose it is).
    pub fn rename(&mut self, name: &str) -> Result<(), String> {
        for d in self.dirs.iter_mut() {
            let to = d.with_file_name(name);
            std::fs::rename(&*d, &to)
                .map_err(|e| format!("renaming {} to {}: {e}", d.display(), to.display()))?;
            if self.memory_dir == *d {
                self.memory_dir = to.clone();
            }
            if self.cpu_dir.as_ref() == Some(d) {
                self.cpu_dir = Some(to.clone());
            }
            *d = to;
        }
        self.procs = procs_files(&self.dirs);
        Ok(())
    }

    /// Sets the memory limit, and the CPU weight that goes with it. Fails
    /// when the cell already uses more than the new limit.
    pub fn set_limits(&self, memory_mb: u32) -> Result<(), String> {
        let bytes = (memory_mb as u64) << 20;
        let mem = &self.memory_dir;
        if self.v2 {
            write(mem.join("memory.max"), bytes.to_string())?;
            let _ = write(mem.join("memory.swap.max"), "0".into());
        } else {
            // memsw (memory + swap) must stay >= the memory limit: order
            // the two writes so that holds whether the limit grows or
            // shrinks. No swapping around the limit, where the kernel
            // allows it.
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            let raise = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|old| bytes > old);
            if raise {
                let _ = write(memsw.clone(), bytes.to_string());
            }
            write(mem.join("memory.limit_in_bytes"), bytes.to_string())?;
            if !raise {
                let _ = write(memsw, bytes.to_string());
            }
            let _ = write(mem.join("memory.swappiness"), "0".into());
        }
        // CPU in proportion to memory, as on Lambda (1,769 MB = one vCPU):
        // a 128 MB function gets 1/14 of a core's weight when the CPU is
        // contended, and the node's own threads (weight 1,024) come first.
        if let Some(cpu) = &self.cpu_dir {
            if self.v2 {
                let weight = (memory_mb as u64 * 100 / 1769).clamp(1, 10_000);
                let _ = write(cpu.join("cpu.weight"), weight.to_string());
            } else {
                let shares = (memory_mb as u64 * 1024 / 1769).clamp(2, 262_144);
                let _ = write(cpu.join("cpu.shares"), shares.to_string());
            }
        }
        Ok(())
    }

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

/// Where the node mounts the empty cgroup hierarchy that turns on
/// `favordynmods` (see [`fast_cgroup_moves`]).
const FAVOR_DYNMODS_MOUNT: &str = "/run/wisp/cgroup-favordynmods";

/// Makes moving a process into its cgroup cheap. Every move takes the
/// kernel's global cgroup threadgroup lock for writing, and without
/// `favordynmods` that waits for an RCU grace period whenever the lock was
/// not taken recently: 15-20 ms of each cold start on an idle node. The
/// option is global to the lock, so mounting one empty named v1 hierarchy
/// (no controllers) with it is enough; it stays mounted for later nodes.
/// The price is a slightly slower fork and exit node-wide, which is what
/// the kernel documents the option for. Best effort: without it, cold
/// starts are slower, nothing else changes.
fn fast_cgroup_moves(v2: bool) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.contains(" - cgroup") && l.contains("favordynmods"))
    {
        return;
    }
    let dir = Path::new(FAVOR_DYNMODS_MOUNT);
    let _ = std::fs::create_dir_all(dir);
    let (src, target) = (cs("cgroup"), c(dir));
    let opts = cs("none,name=wisp,favordynmods");
    // SAFETY: plain mount(2) with NUL-terminated strings that outlive it.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            opts.as_ptr().cast(),
        )
    };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        let hint = if v2 {
            "; `mount -o remount,favordynmods /sys/fs/cgroup` does the same on cgroup v2"
        } else {
            ""
        };
        tracing::info!(
            "could not mount a cgroup hierarchy with favordynmods at {FAVOR_DYNMODS_MOUNT} ({err}): each sandboxed cold start may wait 15-20 ms for the kernel{hint}"
        );
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
    code: Option<CString>,
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
    code_dir: Option<&Path>,
    hide: &[PathBuf],
) {
    let plan = cell.map(|cell| Plan {
        procs: cell.procs.clone(),
        code: code_dir.map(c),
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
            // A stem cell gets its code later, from `inject_code`.
            if let Some(code) = &p.code {
                check(libc::mount(
                    code.as_ptr(),
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
            }
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
            check(libc::chdir(if p.code.is_some() {
                p.task.as_ptr()
            } else {
                p.tmp.as_ptr()
            }))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(NOBODY))?;
            check(libc::setuid(NOBODY))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            Ok(())
        });
    }
}

/// Mounts `code_dir` read-only at `/var/task` in the mount namespace of the
/// sandboxed process `pid` (a stem cell started without code): a detached
/// copy of the directory's mount is made here and moved into that
/// namespace from a short-lived thread that joined it.
pub fn inject_code(pid: u32, code_dir: &Path) -> Result<(), String> {
    let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let path = c(code_dir);
    let empty = cs("");
    let task = cs(TASK_ROOT);
    // SAFETY: open_tree/mount_setattr/open with NUL-terminated strings;
    // the returned descriptors are owned right away.
    let (tree, ns) = unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
        );
        if fd < 0 {
            return Err(err("open_tree"));
        }
        let tree = OwnedFd::from_raw_fd(fd as i32);
        let attr = libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        if libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr,
            std::mem::size_of::<libc::mount_attr>(),
        ) < 0
        {
            return Err(err("mount_setattr"));
        }
        let ns_path = cs(&format!("/proc/{pid}/ns/mnt"));
        let ns = libc::open(ns_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if ns < 0 {
            return Err(err("opening the stem's mount namespace"));
        }
        (tree, OwnedFd::from_raw_fd(ns))
    };
    // Joining a mount namespace changes the thread's root and working
    // directory: a thread of its own, with its own filesystem attributes,
    // that ends right after.
    std::thread::Builder::new()
        .name("wisp-inject".into())
        .spawn(move || {
            // SAFETY: this thread unshares its filesystem attributes before
            // joining the namespace, and exits afterwards.
            unsafe {
                if libc::unshare(libc::CLONE_FS) < 0 {
                    return Err(err("unshare(CLONE_FS)"));
                }
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) < 0 {
                    return Err(err("joining the stem's mount namespace"));
                }
                if libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    task.as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH,
                ) < 0
                {
                    return Err(err("move_mount"));
                }
            }
            Ok(())
        })
        .map_err(|e| format!("starting a thread: {e}"))?
        .join()
        .map_err(|_| "the mount thread panicked".to_string())?
}
