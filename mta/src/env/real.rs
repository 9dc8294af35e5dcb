//! The real host: std filesystem with real fsync (files and directories), tokio sockets,
//! the system clock and OS randomness.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    Env, Exit, Fs, FsFile, Listener, Metadata, Net, Program, Signal, Signals, Udp,
    MAX_PROGRAM_OUTPUT,
};

#[derive(Clone, Default)]
pub struct RealEnv {
    fs: Arc<RealFs>,
    net: Arc<RealNet>,
}

impl RealEnv {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Env for RealEnv {
    type Fs = RealFs;
    type Net = RealNet;
    fn fs(&self) -> &RealFs {
        &self.fs
    }
    fn net(&self) -> &RealNet {
        &self.net
    }
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
    fn random_u64(&self) -> u64 {
        rand::random()
    }
    async fn run_program(&self, p: Program, input: &mut dyn super::Input) -> io::Result<Exit> {
        use std::process::Stdio;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        if let Some(c) = p.creds {
            // As root, std also drops every supplementary group.
            cmd.uid(c.uid).gid(c.gid);
        }
        // Descriptor 3 without unsafe code: the shell moves the pipe it gets as standard
        // input there, and the program's standard input is /dev/null.
        let secret = p.fd3.map(|s| s.0);
        let command = match secret {
            Some(_) => format!("exec 3<&0 </dev/null\n{}", p.command),
            None => p.command,
        };
        let mut secret_input: &[u8] = secret.as_deref().unwrap_or_default();
        let input: &mut dyn super::Input = match secret {
            Some(_) => &mut secret_input,
            None => input,
        };
        let mut child = cmd
            .arg("-c")
            .arg(&command)
            .current_dir(&p.dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(p.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        // Feed stdin while reading both output streams (a program filling one pipe while we
        // wait on another would hang), keeping only what the report can use of the output.
        let pid = child.id();
        let (fed, mut out, err) = tokio::join!(
            feed(child.stdin.take(), input, pid),
            read_capped(child.stdout.take(), MAX_PROGRAM_OUTPUT),
            read_capped(child.stderr.take(), MAX_PROGRAM_OUTPUT)
        );
        let status = child.wait().await?;
        // The program saw only part of its input: whatever it did, it did not get the message.
        fed?;
        out.extend_from_slice(&err);
        out.truncate(MAX_PROGRAM_OUTPUT);
        Ok(Exit {
            code: status.code(),
            output: out,
        })
    }

    fn signals(&self) -> io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::hangup(), Signal::Hup),
            (SignalKind::terminate(), Signal::Term),
            (SignalKind::interrupt(), Signal::Int),
            (SignalKind::alarm(), Signal::Alrm),
        ];
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for (kind, sig) in kinds {
            let mut s = signal(kind)?;
            let tx = tx.clone();
            tokio::spawn(async move { while s.recv().await.is_some() && tx.send(sig).is_ok() {} });
        }
        Ok(rx)
    }
    fn stdout(&self, line: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed stdout (the operator went away) must not stop the server.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
    fn stderr(&self, line: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn uid(&self) -> u32 {
        nix::unistd::getuid().as_raw()
    }
    fn run_as<T, Fut, F>(
        &self,
        who: super::Creds,
        home: &Path,
        f: F,
    ) -> impl std::future::Future<Output = io::Result<T>> + Send + use<T, Fut, F>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
        F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    {
        let root = self.uid() == 0;
        let home = home.to_path_buf();
        async move {
            if !root {
                return Ok(f(home).await);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("delivery".into())
                .spawn(move || {
                    let _ = tx.send(deliver_on_this_thread(who, &home, f));
                })?;
            rx.await
                .map_err(|_| io::Error::other("the delivery thread died"))?
        }
    }
    fn spawn_lspawn(&self, root: &Path) -> io::Result<super::HelperPipe> {
        spawn_helper(root, "lspawn")
    }
    fn spawn_pop3_helper(&self, root: &Path) -> io::Result<super::HelperPipe> {
        spawn_helper(root, "pop3helper")
    }
    fn blocking<T, F>(&self, f: F) -> impl std::future::Future<Output = T> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let h = tokio::task::spawn_blocking(f);
        async move {
            match h.await {
                Ok(t) => t,
                // The work panicked: carry the panic on, as an inline call would.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }
    fn drop_privileges(&self, account: &str) -> io::Result<super::Creds> {
        super::privsep::become_account(account)
    }
    fn local_addresses(&self) -> io::Result<Vec<std::net::IpAddr>> {
        let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
        Ok(addrs
            .filter_map(|a| a.address)
            .filter_map(|s| {
                s.as_sockaddr_in()
                    .map(|v4| std::net::IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
            })
            .collect())
    }
    fn spawn_worker<T, F>(
        &self,
        threads: usize,
        f: F,
    ) -> io::Result<impl std::future::Future<Output = Option<T>> + Send + use<T, F>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("mta-send")
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("mta-send".into())
            .spawn(move || {
                let _ = tx.send(rt.block_on(f));
            })?;
        Ok(async move { rx.await.ok() })
    }
}

#[derive(Default)]
pub struct RealFs;

pub struct RealFile(File);

impl FsFile for RealFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Fs for RealFs {
    type File = RealFile;
    type Lock = File;

    fn create_new(&self, path: &Path) -> io::Result<RealFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(RealFile)
    }
    fn open_rw(&self, path: &Path) -> io::Result<RealFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(RealFile)
    }
    fn open_read_in(&self, dir: &Path, name: &str) -> io::Result<(RealFile, Metadata, Metadata)> {
        use nix::fcntl::{openat, OFlag};
        use std::os::fd::AsFd;
        let refuse =
            |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, format!("{name}: {why}"));
        let d = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)?;
        let dm = d.metadata()?;
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = openat(d.as_fd(), name, flags, nix::sys::stat::Mode::empty())?;
        let f = File::from(fd);
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(refuse("not a regular file"));
        }
        if m.dev() != dm.dev() {
            return Err(refuse("not on the directory's device"));
        }
        Ok((RealFile(f), meta(&m)?, meta(&dm)?))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }
    fn unlink(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // Linux makes a directory's entries durable through fsync on the directory itself.
        File::open(path)?.sync_all()
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(path)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        meta(&std::fs::metadata(path)?)
    }
    fn try_lock(&self, path: &Path) -> io::Result<File> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another process", path.display()),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

fn meta(m: &std::fs::Metadata) -> io::Result<Metadata> {
    Ok(Metadata {
        len: m.len(),
        is_dir: m.is_dir(),
        mtime: m.modified()?,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

#[derive(Default)]
pub struct RealNet;

pub struct RealListener(tokio::net::TcpListener);
pub struct RealUdp(tokio::net::UdpSocket);

impl Net for RealNet {
    type Stream = tokio::net::TcpStream;
    type Listener = RealListener;
    type Udp = RealUdp;
    async fn listen(&self, addr: SocketAddr) -> io::Result<RealListener> {
        tokio::net::TcpListener::bind(addr).await.map(RealListener)
    }
    async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<RealUdp> {
        tokio::net::UdpSocket::bind(addr).await.map(RealUdp)
    }
}

impl Listener for RealListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (s, a) = self.0.accept().await?;
        s.set_nodelay(true)?;
        Ok((s, a))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Udp for RealUdp {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, to).await
    }
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Write `input` to a program's standard input, then close it. A program that stops reading
/// (closes its end) just gets no more. A piece that cannot be read is an error, and the
/// program is killed before its input closes: it must never take a cut-short message for a
/// whole one (and act on it, only to get the whole message again on the retry).
async fn feed(
    stdin: Option<tokio::process::ChildStdin>,
    input: &mut dyn super::Input,
    pid: Option<u32>,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let Some(mut s) = stdin else { return Ok(()) };
    loop {
        let piece = match input.next_piece() {
            Ok(p) => p,
            Err(e) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
                return Err(e);
            }
        };
        // A program may stop reading (exit early, ignore its input): not an error.
        if piece.is_empty() || s.write_all(&piece).await.is_err() {
            return Ok(());
        }
    }
}

/// Read a stream to its end, keeping at most `cap` bytes: memory stays bounded whatever a
/// program prints, and the program never blocks on a full pipe.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, cap: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut r) = r else { return kept };
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// Start this binary as `mta --root ROOT COMMAND`, a helper keeping this process's
/// privileges, talking over its standard input and output.
fn spawn_helper(root: &Path, command: &str) -> io::Result<super::HelperPipe> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--root")
        .arg(root)
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other(format!("no pipe to mta {command}")));
    };
    // The helper ends when its pipe closes (this process ended); reap it then.
    let command = command.to_string();
    tokio::spawn(async move {
        let status = child.wait().await;
        tracing::info!(?status, "helper mta {command} ended");
    });
    Ok(super::HelperPipe {
        from: Box::new(from),
        to: Box::new(to),
    })
}

/// Become `who` in `home` on this (fresh) thread and run the delivery there to completion.
fn deliver_on_this_thread<T, Fut, F>(who: super::Creds, home: &Path, f: F) -> io::Result<T>
where
    Fut: std::future::Future<Output = T>,
    F: FnOnce(std::path::PathBuf) -> Fut,
{
    super::privsep::become_user(who, home)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f(std::path::PathBuf::from("."))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Input, Program};

    /// One piece, then a read error (a lost sector under the message).
    struct Broken(bool);

    impl Input for Broken {
        fn next_piece(&mut self) -> io::Result<Vec<u8>> {
            if std::mem::replace(&mut self.0, true) {
                return Err(io::Error::other("simulated read error"));
            }
            Ok(b"Subject: half\n\nfirst piece\n".to_vec())
        }
    }

    #[tokio::test]
    async fn a_program_whose_input_cannot_be_read_is_killed_before_its_input_ends() {
        let d = tempfile::tempdir().unwrap();
        let p = Program {
            // Acts only once its input is whole: that must never happen here.
            command: "cat > got && touch whole".into(),
            dir: d.path().to_path_buf(),
            creds: None,
            vars: Vec::new(),
            fd3: None,
        };
        let r = RealEnv::new().run_program(p, &mut Broken(false)).await;
        assert!(r.is_err(), "{r:?}");
        assert!(
            !d.path().join("whole").exists(),
            "the program saw an end of input"
        );
    }
}
