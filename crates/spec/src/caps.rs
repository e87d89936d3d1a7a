//! Capabilities: containerd's default set and the CRI add/drop rules.

use std::collections::HashSet;

use berth_api::v1;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::{Result, SpecError};

/// The highest capability number in [`ALL`].
pub const LAST_KNOWN_CAP: u32 = 40;

/// Every Linux capability by number (linux/capability.h).
const ALL: [(u32, &str, Capability); 41] = [
    (0, "CHOWN", Capability::Chown),
    (1, "DAC_OVERRIDE", Capability::DacOverride),
    (2, "DAC_READ_SEARCH", Capability::DacReadSearch),
    (3, "FOWNER", Capability::Fowner),
    (4, "FSETID", Capability::Fsetid),
    (5, "KILL", Capability::Kill),
    (6, "SETGID", Capability::Setgid),
    (7, "SETUID", Capability::Setuid),
    (8, "SETPCAP", Capability::Setpcap),
    (9, "LINUX_IMMUTABLE", Capability::LinuxImmutable),
    (10, "NET_BIND_SERVICE", Capability::NetBindService),
    (11, "NET_BROADCAST", Capability::NetBroadcast),
    (12, "NET_ADMIN", Capability::NetAdmin),
    (13, "NET_RAW", Capability::NetRaw),
    (14, "IPC_LOCK", Capability::IpcLock),
    (15, "IPC_OWNER", Capability::IpcOwner),
    (16, "SYS_MODULE", Capability::SysModule),
    (17, "SYS_RAWIO", Capability::SysRawio),
    (18, "SYS_CHROOT", Capability::SysChroot),
    (19, "SYS_PTRACE", Capability::SysPtrace),
    (20, "SYS_PACCT", Capability::SysPacct),
    (21, "SYS_ADMIN", Capability::SysAdmin),
    (22, "SYS_BOOT", Capability::SysBoot),
    (23, "SYS_NICE", Capability::SysNice),
    (24, "SYS_RESOURCE", Capability::SysResource),
    (25, "SYS_TIME", Capability::SysTime),
    (26, "SYS_TTY_CONFIG", Capability::SysTtyConfig),
    (27, "MKNOD", Capability::Mknod),
    (28, "LEASE", Capability::Lease),
    (29, "AUDIT_WRITE", Capability::AuditWrite),
    (30, "AUDIT_CONTROL", Capability::AuditControl),
    (31, "SETFCAP", Capability::Setfcap),
    (32, "MAC_OVERRIDE", Capability::MacOverride),
    (33, "MAC_ADMIN", Capability::MacAdmin),
    (34, "SYSLOG", Capability::Syslog),
    (35, "WAKE_ALARM", Capability::WakeAlarm),
    (36, "BLOCK_SUSPEND", Capability::BlockSuspend),
    (37, "AUDIT_READ", Capability::AuditRead),
    (38, "PERFMON", Capability::Perfmon),
    (39, "BPF", Capability::Bpf),
    (40, "CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// containerd's `defaultUnixCaps` (pkg/oci/spec.go), the same list as
/// Docker's: what a non-privileged container gets without add/drop.
pub const DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The mask of capabilities 0..=`last` (`cap_last_cap`).
pub fn up_to(last: u32) -> u64 {
    if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// Every capability berthd can give (`available`: a mask, bit n for
/// capability n: the kernel's `cap_last_cap` and berthd's own bounding set),
/// for "ALL" and privileged containers. containerd takes the daemon's
/// capabilities too: a host that withholds one (CAP_SYS_RESOURCE here) must
/// not make every privileged container fail.
pub fn all(available: u64) -> Capabilities {
    ALL.iter()
        .filter(|(n, _, _)| available & (1u64 << n) != 0)
        .map(|(_, _, c)| *c)
        .collect()
}

/// A CRI capability name: "NET_ADMIN" (the Kubernetes form) or
/// "CAP_NET_ADMIN", any case.
pub fn parse(name: &str, field: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL.iter()
        .find(|(_, n, _)| *n == bare)
        .map(|(_, _, c)| *c)
        .ok_or_else(|| SpecError::invalid(field, format!("unknown capability {name:?}")))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The process capabilities of a container.
///
/// Follows containerd's `WithCapabilities` order: "ALL" in add, then "ALL" in
/// drop, then the named adds, then the named drops; so `add: [ALL], drop:
/// [CHOWN]` is everything but CHOWN and `drop: [ALL], add: [NET_RAW]` is just
/// NET_RAW. Adds go to bounding, effective and permitted (not inheritable);
/// drops remove from every set. `add_ambient_capabilities` (CRI 1.33+) puts a
/// capability in all five sets; containerd clears the ambient set instead
/// (`WithoutAmbientCaps`), which loses what the CRI asks for.
/// `privileged` starts from every capability the host has.
pub fn build(
    caps: Option<&v1::Capability>,
    privileged: bool,
    available: u64,
) -> Result<LinuxCapabilities> {
    const FIELD: &str = "linux.security_context.capabilities";
    let mut bounding: Capabilities = DEFAULT.into_iter().collect();
    let mut inheritable = Capabilities::new();
    let mut ambient = Capabilities::new();

    if let Some(c) = caps {
        let add_field = format!("{FIELD}.add_capabilities");
        let drop_field = format!("{FIELD}.drop_capabilities");
        let amb_field = format!("{FIELD}.add_ambient_capabilities");
        if c.add_capabilities.iter().any(|n| is_all(n)) {
            bounding = all(available);
        }
        if c.drop_capabilities.iter().any(|n| is_all(n)) {
            bounding.clear();
            inheritable.clear();
        }
        for n in c.add_capabilities.iter().filter(|n| !is_all(n)) {
            bounding.insert(parse(n, &add_field)?);
        }
        for n in &c.add_ambient_capabilities {
            if is_all(n) {
                return Err(SpecError::invalid(
                    amb_field,
                    "\"ALL\" is not allowed for ambient capabilities",
                ));
            }
            let cap = parse(n, &amb_field)?;
            bounding.insert(cap);
            inheritable.insert(cap);
            ambient.insert(cap);
        }
        let mut dropped = HashSet::new();
        for n in c.drop_capabilities.iter().filter(|n| !is_all(n)) {
            dropped.insert(parse(n, &drop_field)?);
        }
        for set in [&mut bounding, &mut inheritable, &mut ambient] {
            set.retain(|c| !dropped.contains(c));
        }
    }

    if privileged {
        // containerd's WithPrivileged: every capability, whatever add/drop said.
        bounding = all(available);
    }
    // A named capability the host withholds: say so, rather than let
    // libcontainer fail with EPERM from capset.
    if let Some((_, name, _)) = ALL
        .iter()
        .find(|(n, _, c)| available & (1u64 << n) == 0 && bounding.contains(c))
    {
        return Err(SpecError::invalid(
            format!("{FIELD}.add_capabilities"),
            format!(
                "capability {name} is not available to berthd on this host (not in its bounding set)"
            ),
        ));
    }

    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(bounding.clone()))
        .set_effective(Some(bounding.clone()))
        .set_permitted(Some(bounding))
        .set_inheritable(Some(inheritable))
        .set_ambient(Some(ambient));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[Capability]) -> Capabilities {
        caps.iter().copied().collect()
    }

    fn cri(add: &[&str], drop: &[&str], ambient: &[&str]) -> v1::Capability {
        v1::Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: ambient.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn table_is_complete_and_numbered() {
        for (i, (n, name, cap)) in ALL.iter().enumerate() {
            assert_eq!(*n as usize, i);
            // Same spelling as oci-spec's own names.
            assert_eq!(cap.to_string(), *name);
        }
        assert_eq!(all(up_to(40)).len(), 41);
        assert_eq!(
            all(up_to(37)).len(),
            38,
            "a 5.4 kernel has no PERFMON/BPF/CHECKPOINT_RESTORE"
        );
    }

    #[test]
    fn default_set() {
        let c = build(None, false, up_to(40)).unwrap();
        assert_eq!(c.bounding().as_ref().unwrap(), &set(&DEFAULT));
        assert_eq!(c.effective().as_ref().unwrap(), &set(&DEFAULT));
        assert_eq!(c.permitted().as_ref().unwrap(), &set(&DEFAULT));
        assert!(c.inheritable().as_ref().unwrap().is_empty());
        assert!(c.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn add_and_drop() {
        let c = build(
            Some(&cri(
                &["NET_ADMIN", "cap_sys_time"],
                &["CHOWN", "CAP_KILL"],
                &[],
            )),
            false,
            up_to(40),
        )
        .unwrap();
        let b = c.bounding().as_ref().unwrap();
        assert!(b.contains(&Capability::NetAdmin));
        assert!(b.contains(&Capability::SysTime));
        assert!(!b.contains(&Capability::Chown));
        assert!(!b.contains(&Capability::Kill));
        assert_eq!(b.len(), DEFAULT.len());
    }

    #[test]
    fn add_all_then_drop_one() {
        let c = build(Some(&cri(&["ALL"], &["CHOWN"], &[])), false, up_to(40)).unwrap();
        let b = c.bounding().as_ref().unwrap();
        assert_eq!(b.len(), 40);
        assert!(!b.contains(&Capability::Chown));
        assert!(b.contains(&Capability::SysAdmin));
    }

    #[test]
    fn drop_all_then_add_one() {
        let c = build(
            Some(&cri(&["NET_BIND_SERVICE"], &["all"], &[])),
            false,
            up_to(40),
        )
        .unwrap();
        assert_eq!(
            c.effective().as_ref().unwrap(),
            &set(&[Capability::NetBindService])
        );
    }

    #[test]
    fn ambient_goes_to_every_set_and_drop_wins() {
        let c = build(
            Some(&cri(&[], &["SYS_TIME"], &["NET_ADMIN", "SYS_TIME"])),
            false,
            up_to(40),
        )
        .unwrap();
        for s in [
            c.bounding(),
            c.effective(),
            c.permitted(),
            c.inheritable(),
            c.ambient(),
        ] {
            let s = s.as_ref().unwrap();
            assert!(s.contains(&Capability::NetAdmin));
            assert!(!s.contains(&Capability::SysTime));
        }
    }

    #[test]
    fn unknown_capability_names_the_field() {
        let e = build(Some(&cri(&["NET_FLY"], &[], &[])), false, up_to(40)).unwrap_err();
        assert_eq!(
            e.field(),
            "linux.security_context.capabilities.add_capabilities"
        );
        assert!(e.to_string().contains("NET_FLY"), "{e}");
        let e = build(Some(&cri(&[], &["bogus"], &[])), false, up_to(40)).unwrap_err();
        assert_eq!(
            e.field(),
            "linux.security_context.capabilities.drop_capabilities"
        );
        let e = build(Some(&cri(&[], &[], &["ALL"])), false, up_to(40)).unwrap_err();
        assert_eq!(
            e.field(),
            "linux.security_context.capabilities.add_ambient_capabilities"
        );
    }

    #[test]
    fn capabilities_the_host_withholds_are_left_out_or_refused() {
        // This machine's case: CAP_SYS_RESOURCE (24) not in the bounding set.
        let avail = up_to(40) & !(1 << 24);
        for c in [
            build(None, true, avail).unwrap(),
            build(Some(&cri(&["ALL"], &[], &[])), false, avail).unwrap(),
        ] {
            let b = c.bounding().as_ref().unwrap();
            assert_eq!(b.len(), 40);
            assert!(!b.contains(&Capability::SysResource));
        }
        let e = build(Some(&cri(&["SYS_RESOURCE"], &[], &[])), false, avail).unwrap_err();
        assert!(e.to_string().contains("SYS_RESOURCE"), "{e}");
    }

    #[test]
    fn privileged_gets_every_host_capability() {
        let c = build(Some(&cri(&[], &["ALL"], &[])), true, up_to(38)).unwrap();
        assert_eq!(c.bounding().as_ref().unwrap().len(), 39);
        assert_eq!(c.permitted().as_ref().unwrap().len(), 39);
    }
}
