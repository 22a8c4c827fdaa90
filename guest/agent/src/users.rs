// Resolving an exec's `user` (a name, `uid`, `uid:gid`, `name:group`) to the ids the process
// runs with, from the sandbox root's /etc/passwd and /etc/group as the image ships them.
//
// The agent is chrooted into the sandbox root, so "/etc/passwd" is the image's file. Both files
// are untrusted (the image, or a command that ran before, wrote them): lines that do not parse
// are skipped, and the files are read only up to a bound.

use std::fmt;

/// Bytes of /etc/passwd or /etc/group read at most; larger files are cut there.
const MAX_DB: u64 = 4 * 1024 * 1024;
/// Supplementary groups passed to setgroups at most (the kernel's NGROUPS_MAX is 65536).
pub const MAX_GROUPS: usize = 1024;

/// The identity an exec runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group included, as login(1) does).
    pub groups: Vec<u32>,
    /// From passwd; "/" when the user has no entry.
    pub home: String,
    /// The passwd name, when there is one.
    pub name: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One /etc/passwd entry: name, uid, gid, home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One /etc/group entry: name, gid, members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() || line.starts_with('#') {
                return None;
            }
            Some(PasswdEntry { name: f[0].into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].into() })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() || line.starts_with('#') {
                return None;
            }
            let members = f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect();
            Some(GroupEntry { name: f[0].into(), gid: f[2].parse().ok()?, members })
        })
        .collect()
}

fn read_db(path: &str) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.take(MAX_DB).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// Resolves `spec` against the sandbox's own /etc/passwd and /etc/group.
pub fn resolve(spec: &str) -> Result<Identity, UserError> {
    resolve_with(spec, &parse_passwd(&read_db("/etc/passwd")), &parse_group(&read_db("/etc/group")))
}

fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// As Docker's `--user`: `name`, `uid`, `name:group`, `uid:gid` (group a name or number). A
/// numeric uid need not exist in passwd (it then runs with gid 0 unless one is given, HOME /);
/// a name must. Supplementary groups are those listing the passwd name as a member.
pub fn resolve_with(spec: &str, passwd: &[PasswdEntry], groups: &[GroupEntry]) -> Result<Identity, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err(UserError(format!("invalid user {spec:?}: expected a name, uid, uid:gid or name:group")));
    }
    let entry = match numeric(user_part) {
        Some(uid) => passwd.iter().find(|e| e.uid == uid).cloned().map(Ok).unwrap_or(Err(uid)),
        None => match passwd.iter().find(|e| e.name == user_part) {
            Some(e) => Ok(e.clone()),
            None => return Err(UserError(format!("unknown user {user_part:?}: no such entry in the sandbox's /etc/passwd"))),
        },
    };
    let (uid, mut gid, home, name) = match &entry {
        Ok(e) => (e.uid, e.gid, e.home.clone(), Some(e.name.clone())),
        Err(uid) => (*uid, 0, "/".to_string(), None),
    };
    if let Some(g) = group_part {
        gid = match numeric(g) {
            Some(gid) => gid,
            None => match groups.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => return Err(UserError(format!("unknown group {g:?}: no such entry in the sandbox's /etc/group"))),
            },
        };
    }
    let mut supplementary = vec![gid];
    if let Some(n) = &name {
        for g in groups.iter().filter(|g| g.members.iter().any(|m| m == n)) {
            if !supplementary.contains(&g.gid) && supplementary.len() < MAX_GROUPS {
                supplementary.push(g.gid);
            }
        }
    }
    Ok(Identity { uid, gid, groups: supplementary, home: if home.is_empty() { "/".into() } else { home }, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        broken line\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/false\n\
        nohome:x:1002:1002:::/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:alice,bob\nalice:x:1000:\nwheel:x:10:alice\nbad:x:notanumber:alice\n";

    fn r(spec: &str) -> Result<Identity, UserError> {
        resolve_with(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn names_resolve_with_home_and_supplementary_groups() {
        let a = r("alice").unwrap();
        assert_eq!((a.uid, a.gid, a.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(a.groups, [1000, 100, 10]);
        assert_eq!(a.name.as_deref(), Some("alice"));
        let b = r("bob").unwrap();
        assert_eq!((b.uid, b.gid, b.groups.clone()), (1001, 100, vec![100]));
        assert_eq!(r("nohome").unwrap().home, "/");
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let n = r("4242").unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str(), n.name.clone()), (4242, 0, "/", None));
        assert_eq!(n.groups, [0]);
        let n = r("4242:77").unwrap();
        assert_eq!((n.uid, n.gid, n.groups.clone()), (4242, 77, vec![77]));
        // A known uid takes its passwd entry (home, groups).
        let a = r("1000").unwrap();
        assert_eq!((a.home.as_str(), a.groups.len()), ("/home/alice", 3));
    }

    #[test]
    fn groups_by_name_or_number_override_the_primary() {
        let a = r("alice:wheel").unwrap();
        assert_eq!((a.uid, a.gid), (1000, 10));
        assert_eq!(a.groups[0], 10);
        assert_eq!(r("alice:5").unwrap().gid, 5);
        assert_eq!(r("0:0").unwrap().home, "/root");
    }

    #[test]
    fn unknown_names_are_named_in_the_error() {
        let e = r("mallory").unwrap_err();
        assert!(e.0.contains("unknown user \"mallory\"") && e.0.contains("/etc/passwd"), "{e}");
        let e = r("alice:nogroup").unwrap_err();
        assert!(e.0.contains("unknown group \"nogroup\""), "{e}");
        for bad in [":", "alice:", ":5"] {
            assert!(r(bad).unwrap_err().0.contains("invalid user"), "{bad}");
        }
    }

    #[test]
    fn hostile_files_are_skipped_not_trusted() {
        let p = parse_passwd("x:x:99999999999:0:::\n::1:1:::\nok:x:5:5::/h:/s\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "ok");
    }
}
