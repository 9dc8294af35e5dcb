//! The named fsync points of the queue and the installer.
//!
//! Every fsync the queue issues goes through one of these, so verification can switch a single
//! one off and show that the crash-point enumeration then finds lost mail: each one earns its
//! place. Production code never disables any.

/// One fsync call site of the queue's commit paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyncPoint {
    /// Directories created for the queue layout, fsynced in their parents.
    LayoutDirs,
    /// An injected message's file in `tmp/`, before it is renamed into `todo/`.
    TodoFile,
    /// `todo/` after renames into it: the injection commit point.
    TodoDir,
    /// A batch of records appended to the head log segment: the log commit point.
    LogData,
    /// `log/` after creating a new segment.
    LogDir,
    /// `todo/` after preprocessing removed entries, before any log segment can be collected.
    TodoUnlink,
    /// `mta init`: each control, alias and assign file written.
    InstallFiles,
    /// `mta init`: directories holding new entries.
    InstallDirs,
    /// A message file in a Maildir's `tmp/`, before it is linked into `new/`.
    MaildirFile,
    /// A Maildir's `new/` after the link: the local delivery commit point.
    MaildirNew,
    /// An mbox after appending a message.
    MboxFile,
    /// The mbox append marker (file and directory) before the append.
    MboxMark,
    /// The mbox directory after the marker is removed, before success is reported.
    MboxMarkGone,
}

impl SyncPoint {
    pub const ALL: [SyncPoint; 13] = [
        SyncPoint::LayoutDirs,
        SyncPoint::TodoFile,
        SyncPoint::TodoDir,
        SyncPoint::LogData,
        SyncPoint::LogDir,
        SyncPoint::TodoUnlink,
        SyncPoint::InstallFiles,
        SyncPoint::InstallDirs,
        SyncPoint::MaildirFile,
        SyncPoint::MaildirNew,
        SyncPoint::MboxFile,
        SyncPoint::MboxMark,
        SyncPoint::MboxMarkGone,
    ];
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Which sync points are switched off (verification only; empty in production).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disabled(u32);

impl Disabled {
    pub fn none() -> Self {
        Disabled(0)
    }
    pub fn only(p: SyncPoint) -> Self {
        Disabled(p.bit())
    }
    pub fn contains(self, p: SyncPoint) -> bool {
        self.0 & p.bit() != 0
    }
}
