//! The container's user: uid, gid, supplemental groups and HOME.
//!
//! Follows containerd: `GenerateUserString` + `oci.WithUser` (which user
//! string wins and how it is parsed), `WithUserID`/`WithUsername` (how names
//! and the primary gid come from the image's /etc/passwd),
//! `WithAdditionalGIDs` (groups from the image's /etc/group) and
//! `WithSupplementalGroups` (merging the CRI's, sorted and deduplicated).
//! The image's files are read with [`crate::in_root`], never through a
//! symlink to the host.

use std::collections::BTreeSet;
use std::path::Path;

use berth_api::v1;

use crate::error::{Result, SpecError};
use crate::in_root;

/// runc (and so containerd) refuse ids above `i32::MAX`.
const MAX_ID: i64 = i32::MAX as i64;
/// Bigger user databases than this are not plausible in an image.
const MAX_DB_LEN: u64 = 16 << 20;

const SC: &str = "linux.security_context";

/// The process identity of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, deduplicated.
    pub additional_gids: Vec<u32>,
    /// The user's home from the image's /etc/passwd, for `HOME`.
    pub home: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The image's user database, read lazily and at most once.
struct ImageDb<'a> {
    rootfs: &'a Path,
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

impl<'a> ImageDb<'a> {
    fn new(rootfs: &'a Path) -> Self {
        ImageDb {
            rootfs,
            passwd: None,
            group: None,
        }
    }

    fn read(&self, path: &str) -> Result<String> {
        match in_root::read_file(self.rootfs, path, MAX_DB_LEN) {
            Ok(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Ok(None) => Ok(String::new()),
            Err(e) => Err(SpecError::io(
                format!("image {path}"),
                self.rootfs.join(path.trim_start_matches('/')),
                e,
            )),
        }
    }

    fn passwd(&mut self) -> Result<&[PasswdEntry]> {
        if self.passwd.is_none() {
            self.passwd = Some(parse_passwd(&self.read("/etc/passwd")?));
        }
        Ok(self.passwd.as_deref().unwrap_or_default())
    }

    fn group(&mut self) -> Result<&[GroupEntry]> {
        if self.group.is_none() {
            self.group = Some(parse_group(&self.read("/etc/group")?));
        }
        Ok(self.group.as_deref().unwrap_or_default())
    }

    fn user_by_name(&mut self, name: &str) -> Result<Option<PasswdEntry>> {
        Ok(self.passwd()?.iter().find(|u| u.name == name).cloned())
    }

    fn user_by_uid(&mut self, uid: u32) -> Result<Option<PasswdEntry>> {
        Ok(self.passwd()?.iter().find(|u| u.uid == uid).cloned())
    }
}

/// `name:password:uid:gid:gecos:home:shell`; first match wins, like
/// moby/sys/user. Lines with a non-numeric id are skipped (moby would read
/// them as 0, i.e. root).
fn parse_passwd(s: &str) -> Vec<PasswdEntry> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// `name:password:gid:member,member`.
fn parse_group(s: &str) -> Vec<GroupEntry> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn check_id(v: i64, field: &str) -> Result<u32> {
    if (0..=MAX_ID).contains(&v) {
        Ok(v as u32)
    } else {
        Err(SpecError::invalid(
            field,
            format!("{v} is out of range 0..={MAX_ID}"),
        ))
    }
}

/// A numeric id in a user string (`strconv.Atoi` rules): `Ok(None)` if it
/// is a name, an error if it is a number out of range.
fn numeric_id(s: &str, field: &str, what: &str) -> Result<Option<u32>> {
    use std::num::IntErrorKind::{NegOverflow, PosOverflow};
    match s.parse::<i64>() {
        Ok(v) if (0..=MAX_ID).contains(&v) => Ok(Some(v as u32)),
        Ok(_) => Err(SpecError::invalid(
            field,
            format!("{what} {s:?} out of range"),
        )),
        Err(e) if matches!(e.kind(), PosOverflow | NegOverflow) => Err(SpecError::invalid(
            field,
            format!("{what} {s:?} out of range"),
        )),
        Err(_) => Ok(None),
    }
}

/// Resolves the container user from the CRI security context and the
/// image's `User`, reading the image's /etc/passwd and /etc/group inside
/// `rootfs`.
pub fn resolve(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    image_user: &str,
    rootfs: &Path,
) -> Result<ResolvedUser> {
    let mut db = ImageDb::new(rootfs);
    let username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");
    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    // GenerateUserString: run_as_username beats run_as_user; run_as_group
    // alone is an error (the CRI says the runtime MUST error).
    let cri_user = if !username.is_empty() {
        Some(username.to_string())
    } else if let Some(uid) = run_as_user {
        Some(check_id(uid, &format!("{SC}.run_as_user"))?.to_string())
    } else {
        None
    };
    if let Some(gid) = run_as_group {
        check_id(gid, &format!("{SC}.run_as_group"))?;
        if cri_user.is_none() {
            return Err(SpecError::invalid(
                format!("{SC}.run_as_group"),
                "set without run_as_user or run_as_username",
            ));
        }
    }
    let (userstr, field) = match &cri_user {
        Some(u) => (
            match run_as_group {
                Some(g) => format!("{u}:{g}"),
                None => u.clone(),
            },
            if username.is_empty() {
                format!("{SC}.run_as_user")
            } else {
                format!("{SC}.run_as_username")
            },
        ),
        None => (image_user.to_string(), "image config User".to_string()),
    };

    let (uid, gid) = parse_user(&userstr, &field, &mut db)?;

    // Supplemental groups (containerSpecOpts): the user part of the same
    // precedence chain, "0" by default.
    let group_user = match &cri_user {
        Some(u) => u.clone(),
        None if !image_user.is_empty() => image_user
            .split_once(':')
            .map_or(image_user, |(u, _)| u)
            .to_string(),
        None => "0".to_string(),
    };
    let policy = match sc.map(|s| s.supplemental_groups_policy).unwrap_or(0) {
        p if p == v1::SupplementalGroupsPolicy::Merge as i32 => v1::SupplementalGroupsPolicy::Merge,
        p if p == v1::SupplementalGroupsPolicy::Strict as i32 => {
            v1::SupplementalGroupsPolicy::Strict
        }
        p => {
            return Err(SpecError::invalid(
                format!("{SC}.supplemental_groups_policy"),
                format!("unknown policy {p}"),
            ));
        }
    };
    let mut gids = BTreeSet::new();
    if policy == v1::SupplementalGroupsPolicy::Merge {
        gids.extend(image_groups(&group_user, &mut db)?);
    }
    for &g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        gids.insert(check_id(g, &format!("{SC}.supplemental_groups"))?);
    }

    let home = db
        .user_by_uid(uid)?
        .map(|u| u.home)
        .filter(|h| !h.is_empty());
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: gids.into_iter().collect(),
        home,
    })
}

/// containerd's `WithUser`: `""` is root; `uid` and `name` look up the
/// primary gid; `a:b` sets both, looking up whichever part is a name.
fn parse_user(userstr: &str, field: &str, db: &mut ImageDb) -> Result<(u32, u32)> {
    if userstr.is_empty() {
        return Ok((0, 0));
    }
    let parts: Vec<&str> = userstr.split(':').collect();
    match parts.as_slice() {
        [user] => match numeric_id(user, field, "uid")? {
            // WithUserID: gid from passwd, or 0 when the uid has no entry.
            Some(uid) => Ok((uid, db.user_by_uid(uid)?.map_or(0, |u| u.gid))),
            // WithUsername: the name must exist.
            None => db
                .user_by_name(user)?
                .map(|u| (u.uid, u.gid))
                .ok_or_else(|| no_such_user(user, field)),
        },
        [user, group] => {
            let uid = match numeric_id(user, field, "uid")? {
                Some(uid) => uid,
                None => {
                    db.user_by_name(user)?
                        .ok_or_else(|| no_such_user(user, field))?
                        .uid
                }
            };
            let gid = match numeric_id(group, field, "gid")? {
                Some(gid) => gid,
                None => db
                    .group()?
                    .iter()
                    .find(|g| g.name == *group)
                    .map(|g| g.gid)
                    .ok_or_else(|| {
                        SpecError::invalid(
                            field,
                            format!("no group {group:?} in the image's /etc/group"),
                        )
                    })?,
            };
            Ok((uid, gid))
        }
        _ => Err(SpecError::invalid(
            field,
            format!("{userstr:?} is not user, uid, user:group or uid:gid"),
        )),
    }
}

fn no_such_user(name: &str, field: &str) -> SpecError {
    SpecError::invalid(
        field,
        format!("no user {name:?} in the image's /etc/passwd"),
    )
}

/// `WithAdditionalGIDs`: the groups whose member list names the user,
/// except the user's own same-named group.
fn image_groups(user: &str, db: &mut ImageDb) -> Result<Vec<u32>> {
    let name = match user.parse::<u32>() {
        Ok(uid) => match db.user_by_uid(uid)? {
            Some(u) => u.name,
            None => return Ok(Vec::new()),
        },
        Err(_) => user.to_string(),
    };
    Ok(db
        .group()?
        .iter()
        .filter(|g| g.name != name && g.members.contains(&name))
        .map(|g| g.gid)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:100::/home/bob:/bin/sh
broken:x:notanumber:0::/:/bin/sh
alice:x:2000:2000:duplicate, ignored:/nope:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
users:x:100:alice
alice:x:1000:alice
wheel:x:10:alice,bob
audio:x:29: bob , carol
video:x:44:
";

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(d.path().join("etc/group"), GROUP).unwrap();
        d
    }

    fn sc() -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext::default()
    }

    fn id(v: i64) -> Option<v1::Int64Value> {
        Some(v1::Int64Value { value: v })
    }

    fn user(uid: u32, gid: u32, gids: &[u32], home: Option<&str>) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: gids.to_vec(),
            home: home.map(str::to_string),
        }
    }

    #[test]
    fn image_user_forms() {
        let d = rootfs();
        let r = |u: &str| resolve(None, u, d.path());
        assert_eq!(r("").unwrap(), user(0, 0, &[], Some("/root")));
        assert_eq!(
            r("alice").unwrap(),
            user(1000, 1000, &[10, 100], Some("/home/alice"))
        );
        assert_eq!(
            r("1001").unwrap(),
            user(1001, 100, &[10, 29], Some("/home/bob"))
        );
        // uid:gid is taken as is, no lookup of the gid.
        assert_eq!(
            r("1000:44").unwrap(),
            user(1000, 44, &[10, 100], Some("/home/alice"))
        );
        // name:group looks up both.
        assert_eq!(
            r("bob:video").unwrap(),
            user(1001, 44, &[10, 29], Some("/home/bob"))
        );
        assert_eq!(r("alice:7").unwrap().gid, 7);
        assert_eq!(r("5:audio").unwrap(), user(5, 29, &[], None));
        // A uid without a passwd entry: gid 0, no groups, no home.
        assert_eq!(r("4242").unwrap(), user(4242, 0, &[], None));
    }

    #[test]
    fn image_user_errors_name_the_field() {
        let d = rootfs();
        for bad in [
            "nobody",
            "nobody:0",
            "0:nogroup",
            "a:b:c",
            "99999999999",
            "1:-5",
        ] {
            let e = resolve(None, bad, d.path()).unwrap_err();
            assert_eq!(e.field(), "image config User", "{bad}: {e}");
        }
        assert!(
            resolve(None, "nobody", d.path())
                .unwrap_err()
                .to_string()
                .contains("nobody")
        );
    }

    #[test]
    fn cri_run_as_user_and_group() {
        let d = rootfs();
        let mut s = sc();
        s.run_as_user = id(1000);
        // The CRI user beats the image's.
        assert_eq!(
            resolve(Some(&s), "bob", d.path()).unwrap(),
            user(1000, 1000, &[10, 100], Some("/home/alice"))
        );
        s.run_as_group = id(3000);
        assert_eq!(resolve(Some(&s), "", d.path()).unwrap().gid, 3000);
        s.run_as_user = id(-1);
        assert_eq!(
            resolve(Some(&s), "", d.path()).unwrap_err().field(),
            "linux.security_context.run_as_user"
        );
    }

    #[test]
    fn run_as_group_without_user_is_an_error() {
        let d = rootfs();
        let mut s = sc();
        s.run_as_group = id(5);
        let e = resolve(Some(&s), "alice", d.path()).unwrap_err();
        assert_eq!(e.field(), "linux.security_context.run_as_group");
    }

    #[test]
    fn run_as_username() {
        let d = rootfs();
        let mut s = sc();
        s.run_as_username = "bob".into();
        s.run_as_user = id(1000); // ignored: the name wins, as in containerd
        assert_eq!(
            resolve(Some(&s), "", d.path()).unwrap(),
            user(1001, 100, &[10, 29], Some("/home/bob"))
        );
        s.run_as_username = "mallory".into();
        let e = resolve(Some(&s), "", d.path()).unwrap_err();
        assert_eq!(e.field(), "linux.security_context.run_as_username");
        assert!(e.to_string().contains("mallory"));
    }

    #[test]
    fn supplemental_groups_merge_and_strict() {
        let d = rootfs();
        let mut s = sc();
        s.run_as_user = id(1000);
        s.supplemental_groups = vec![5000, 10, 4000];
        assert_eq!(
            resolve(Some(&s), "", d.path()).unwrap().additional_gids,
            vec![10, 100, 4000, 5000]
        );
        s.supplemental_groups_policy = v1::SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(
            resolve(Some(&s), "", d.path()).unwrap().additional_gids,
            vec![10, 4000, 5000]
        );
        s.supplemental_groups_policy = 7;
        assert_eq!(
            resolve(Some(&s), "", d.path()).unwrap_err().field(),
            "linux.security_context.supplemental_groups_policy"
        );
        s.supplemental_groups_policy = 0;
        s.supplemental_groups = vec![-3];
        assert_eq!(
            resolve(Some(&s), "", d.path()).unwrap_err().field(),
            "linux.security_context.supplemental_groups"
        );
    }

    #[test]
    fn no_user_database_in_the_image() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(resolve(None, "", d.path()).unwrap(), user(0, 0, &[], None));
        assert_eq!(
            resolve(None, "123:456", d.path()).unwrap(),
            user(123, 456, &[], None)
        );
        assert!(resolve(None, "alice", d.path()).is_err());
    }

    #[test]
    fn hostile_symlinked_passwd_is_not_followed_to_the_host() {
        // The image's /etc/passwd points at a "host" passwd that defines
        // alice as uid 0. Resolution happens inside the rootfs, where that
        // path does not exist, so alice is unknown.
        let host = tempfile::tempdir().unwrap();
        let host_passwd = host.path().join("passwd");
        std::fs::write(&host_passwd, "alice:x:0:0::/root:/bin/sh\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        symlink(&host_passwd, d.path().join("etc/passwd")).unwrap();
        let e = resolve(None, "alice", d.path()).unwrap_err();
        assert!(e.to_string().contains("no user \"alice\""), "{e}");
        // Relative escapes are clamped at the rootfs too.
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        let depth = d.path().components().count();
        let up = "../".repeat(depth + 2);
        let rel = format!(
            "{up}{}",
            host_passwd.to_str().unwrap().trim_start_matches('/')
        );
        symlink(&rel, d.path().join("etc/passwd")).unwrap();
        assert!(resolve(None, "alice", d.path()).is_err());
        // A symlink inside the image is fine.
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::write(d.path().join("etc/passwd.real"), PASSWD).unwrap();
        symlink("/etc/passwd.real", d.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(None, "alice", d.path()).unwrap().uid, 1000);
    }

    #[test]
    fn fifo_passwd_is_an_io_error_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = resolve(None, "alice", d.path()).unwrap_err();
        assert_eq!(e.field(), "image /etc/passwd");
    }
}
