//! The `RuntimeDefault` seccomp profile, as a data table.
//!
//! A transcription of containerd's `DefaultProfile`
//! (contrib/seccomp/seccomp_default.go, itself derived from moby's default
//! profile), so a Kubernetes pod gets the same syscall filter under Berth as
//! under containerd:
//!
//! * default action `SCMP_ACT_ERRNO` with `EPERM`;
//! * the allow-list below;
//! * `socket` for every address family but AF_ALG and AF_VSOCK, and
//!   `personality` for the five harmless personas only;
//! * architecture extras (`arch_prctl`, `modify_ldt` on x86_64, the ARM
//!   cache calls on aarch64);
//! * syscalls unlocked by capabilities in the bounding set (CAP_SYS_ADMIN
//!   unlocks `mount`, `unshare`, `setns`, ...; CAP_SYS_PTRACE `kcmp`, ...);
//! * without CAP_SYS_ADMIN, `clone` only without namespace flags and
//!   `clone3` failing with ENOSYS so libcs fall back to `clone`.
//!
//! containerd adds `ptrace`/`process_vm_*` only on kernels >= 4.8; Berth
//! needs a newer kernel than that anyway (openat2, clone3), so they are
//! always allowed.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
/// CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET | CLONE_NEWCGROUP.
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x0200_0000;

/// Allowed for every container (containerd's first rule).
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat", // kernel v6.5, libseccomp v2.5.5
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2", // kernel v6.6, libseccomp v2.5.5
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue", // kernel v6.7, libseccomp v2.5.5
    "futex_time64",
    "futex_wait", // kernel v6.7, libseccomp v2.5.5
    "futex_waitv",
    "futex_wake", // kernel v6.7, libseccomp v2.5.5
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat", // kernel v6.13, libseccomp v2.6.0
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount", // kernel v6.8, libseccomp v2.6.0
    "listxattr",
    "listxattrat", // kernel v6.13, libseccomp v2.6.0
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr", // kernel v6.8, libseccomp v2.6.0
    "lsm_list_modules",  // kernel v6.8, libseccomp v2.6.0
    "lsm_set_self_attr", // kernel v6.8, libseccomp v2.6.0
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "map_shadow_stack", // kernel v6.6, libseccomp v2.5.5
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal", // kernel v6.10, libseccomp v2.6.0
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat", // kernel v6.13, libseccomp v2.6.0
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat", // kernel v6.13, libseccomp v2.6.0
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount", // kernel v6.8, libseccomp v2.6.0
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe", // kernel v6.11, libseccomp v2.6.0
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `personality(2)` values allowed: PER_LINUX, PER_LINUX32, UNAME26,
/// PER_LINUX32|UNAME26 and the query value 0xffffffff.
const PERSONALITIES: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Allowed since Linux 4.8 (seccomp no longer bypassable through ptrace).
const PTRACE: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// Architecture-specific additions.
#[cfg(target_arch = "x86_64")]
const ARCH_EXTRA: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
const ARCH_EXTRA: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_EXTRA: &[&str] = &[];

/// The architectures the filter covers (containerd's `arches()`): the
/// native one and the compat ABIs a binary in the image might use.
pub fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    } else {
        Vec::new()
    }
}

/// Syscalls unlocked by a capability in the bounding set.
pub const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

fn syscall(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect())
        .set_action(action)
        .set_args(if args.is_empty() { None } else { Some(args) });
    s
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    b.build().expect("every field of a seccomp arg is set")
}

/// The default profile for a container whose bounding set is `bounding`.
pub fn profile(bounding: &Capabilities) -> LinuxSeccomp {
    use LinuxSeccompAction::ScmpActAllow as Allow;
    use LinuxSeccompOperator::*;

    let mut rules = vec![syscall(ALLOWED, Allow, vec![])];
    // One rule per condition: runc/libcontainer split repeated conditions on
    // one argument into separate rules (an OR), so "!= AF_ALG && !=
    // AF_VSOCK" cannot be written as one rule. These three ranges leave
    // exactly AF_ALG and AF_VSOCK to the default action.
    rules.push(syscall(
        &["socket"],
        Allow,
        vec![arg(0, AF_ALG, None, ScmpCmpLt)],
    ));
    rules.push(syscall(
        &["socket"],
        Allow,
        vec![arg(0, AF_ALG + 1, None, ScmpCmpEq)],
    ));
    rules.push(syscall(
        &["socket"],
        Allow,
        vec![arg(0, AF_VSOCK, None, ScmpCmpGt)],
    ));
    for p in PERSONALITIES {
        rules.push(syscall(
            &["personality"],
            Allow,
            vec![arg(0, p, None, ScmpCmpEq)],
        ));
    }
    rules.push(syscall(PTRACE, Allow, vec![]));
    if !ARCH_EXTRA.is_empty() {
        rules.push(syscall(ARCH_EXTRA, Allow, vec![]));
    }
    for (cap, names) in BY_CAPABILITY {
        if bounding.contains(cap) {
            rules.push(syscall(names, Allow, vec![]));
        }
    }
    if !bounding.contains(&Capability::SysAdmin) {
        // clone without namespace flags only (on s390 the flags are arg 1;
        // Berth does not build for s390).
        rules.push(syscall(
            &["clone"],
            Allow,
            vec![arg(0, CLONE_NAMESPACE_FLAGS, Some(0), ScmpCmpMaskedEq)],
        ));
        // clone3's flags live in a struct seccomp cannot inspect: ENOSYS
        // (not EPERM) makes glibc and Go fall back to clone (moby#42681).
        let mut c3 = syscall(&["clone3"], LinuxSeccompAction::ScmpActErrno, vec![]);
        c3.set_errno_ret(Some(ENOSYS));
        rules.push(c3);
    }

    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(EPERM))
        .set_architectures(Some(architectures()))
        .set_syscalls(Some(rules));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn allowed_unconditionally(p: &LinuxSeccomp) -> HashSet<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn default_caps() -> Capabilities {
        crate::caps::DEFAULT.into_iter().collect()
    }

    #[test]
    fn allow_list_is_unique_and_sane() {
        let set: HashSet<_> = ALLOWED.iter().collect();
        assert_eq!(set.len(), ALLOWED.len(), "duplicates");
        assert!(ALLOWED.len() > 350);
        for must in [
            "read",
            "write",
            "execve",
            "openat",
            "futex",
            "exit_group",
            "rt_sigreturn",
        ] {
            assert!(set.contains(&must), "{must}");
        }
        for never in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "kexec_load",
            "init_module",
            "bpf",
            "keyctl",
            "add_key",
            "socket",
            "clone",
            "clone3",
            "personality",
            "chroot",
        ] {
            assert!(!set.contains(&never), "{never} must not be unconditional");
        }
    }

    #[test]
    fn default_caps_profile() {
        let p = profile(&default_caps());
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(EPERM));
        let allowed = allowed_unconditionally(&p);
        // CAP_SYS_CHROOT is in the default set.
        assert!(allowed.contains("chroot"));
        assert!(allowed.contains("ptrace"));
        assert!(!allowed.contains("mount"));
        assert!(!allowed.contains("unshare"));
        let rules = p.syscalls().as_ref().unwrap();
        let clone = rules.iter().find(|s| s.names() == &["clone"]).unwrap();
        let a = &clone.args().as_ref().unwrap()[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            (a.index(), a.value(), a.value_two()),
            (0, 0x7e02_0000, Some(0))
        );
        let c3 = rules.iter().find(|s| s.names() == &["clone3"]).unwrap();
        assert_eq!(c3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(c3.errno_ret(), Some(ENOSYS));
        let sockets: Vec<_> = rules.iter().filter(|s| s.names() == &["socket"]).collect();
        assert_eq!(sockets.len(), 3);
        assert_eq!(
            rules
                .iter()
                .filter(|s| s.names() == &["personality"])
                .count(),
            5
        );
    }

    #[test]
    fn sys_admin_unlocks_namespaces_and_full_clone() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysTime);
        let p = profile(&caps);
        let allowed = allowed_unconditionally(&p);
        for n in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "settimeofday",
        ] {
            assert!(allowed.contains(n), "{n}");
        }
        let rules = p.syscalls().as_ref().unwrap();
        assert!(
            !rules
                .iter()
                .any(|s| s.action() == LinuxSeccompAction::ScmpActErrno)
        );
    }

    #[test]
    fn architectures_for_this_build() {
        let a = architectures();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                a,
                vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
            assert!(allowed_unconditionally(&profile(&default_caps())).contains("arch_prctl"));
        }
    }
}
