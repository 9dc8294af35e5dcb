//! Taking on a delivery user's identity for one thread: qmail runs qmail-local as the
//! recipient; here the delivery runs on a thread of its own whose working directory, groups
//! and filesystem user and group are the recipient's. Files it creates belong to the user,
//! and the kernel checks every access it makes as the user's (a thread whose fsuid leaves 0
//! loses the filesystem capabilities too), so a symlink or a .qmail file cannot make it read
//! or write what the user could not. The one `unsafe` call of the crate is here.

use std::io;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fchdir, setfsgid, setfsuid, setgid, setgroups, setuid, Gid, Uid, User};

use super::Creds;

/// Make the calling thread `who`, working in `home` (opened while still root, so a home whose
/// parents the user cannot search still works, as it does for qmail-local's chdir).
pub fn become_user(who: Creds, home: &Path) -> io::Result<()> {
    if who.uid == 0 {
        return Err(io::Error::other(
            "Not allowed to perform deliveries as root.",
        ));
    }
    // A working directory of this thread alone.
    unshare(CloneFlags::CLONE_FS).map_err(io::Error::from)?;
    let dir = std::fs::File::open(home)?;
    fchdir(&dir).map_err(io::Error::from)?;
    set_thread_groups(who.gid)?;
    setfsgid(Gid::from_raw(who.gid));
    setfsuid(Uid::from_raw(who.uid));
    // setfsuid and setfsgid report no errors: a second call returns the value now in force.
    let uid = setfsuid(Uid::from_raw(who.uid)).as_raw();
    let gid = setfsgid(Gid::from_raw(who.gid)).as_raw();
    if (uid, gid) != (who.uid, who.gid) {
        return Err(io::Error::other(format!(
            "cannot take on uid {} gid {} (still {uid}/{gid})",
            who.uid, who.gid
        )));
    }
    Ok(())
}

/// Make the whole process `account` for good (every thread: glibc applies set*id calls to all
/// of them): no supplementary groups, its gid, its uid. Checked afterwards: uid 0 is out of
/// reach.
pub fn become_account(account: &str) -> io::Result<Creds> {
    let pw = User::from_name(account)
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::other(format!("no account named {account:?}")))?;
    if pw.uid.is_root() {
        return Err(io::Error::other(format!(
            "{account} is root's account: it cannot run the server"
        )));
    }
    setgroups(&[]).map_err(io::Error::from)?;
    setgid(pw.gid).map_err(io::Error::from)?;
    setuid(pw.uid).map_err(io::Error::from)?;
    if setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid() != pw.uid {
        return Err(io::Error::other("privileges were not given up"));
    }
    Ok(Creds {
        uid: pw.uid.as_raw(),
        gid: pw.gid.as_raw(),
    })
}

/// Supplementary groups of this thread only: the user's group, nothing of root's.
/// (The libc `setgroups` changes every thread of the process; the system call does not.)
fn set_thread_groups(gid: u32) -> io::Result<()> {
    let groups: [libc::gid_t; 1] = [gid];
    // SAFETY: `setgroups(2)` reads exactly `size` (1) gid_t values from `list`, which points
    // to a live array of that length for the duration of the call; it writes no memory and
    // affects only the calling thread's credentials when made as a raw system call.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, 1 as libc::c_long, groups.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
