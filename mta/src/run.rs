//! `mta run` on a real host: a runtime, then the one start-up path every simulated host uses.

use std::net::SocketAddr;
use std::path::Path;

use mta::daemon::{self, Listeners, Options, EXIT_TEMP};
use mta::env::real::RealEnv;

/// `nameservers` empty: those of `/etc/resolv.conf`.
pub fn run(
    env: RealEnv,
    root: &Path,
    listen: SocketAddr,
    listen_tls: Option<SocketAddr>,
    nameservers: Vec<SocketAddr>,
    listeners: Listeners,
) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain!("mta run: cannot start: {e}");
            return EXIT_TEMP;
        }
    };
    let opts = Options {
        root: root.to_path_buf(),
        listen,
        listen_tls,
        nameservers: (!nameservers.is_empty()).then_some(nameservers),
        local_ips: Vec::new(),
        log_sink: None,
        fsync_off: mta::queue::Disabled::none(),
        listeners,
    };
    rt.block_on(daemon::run(env, opts))
}

/// `mta lspawn`: the local-delivery helper `mta run` starts for itself while still root.
pub fn lspawn(env: RealEnv, root: &Path) -> i32 {
    let root = root.to_path_buf();
    helper("lspawn", |pipe| mta::local::lspawn::serve(env, root, pipe))
}

/// `mta pop3helper`: the POP3 helper `mta run` starts for itself while still root.
pub fn pop3helper(env: RealEnv, root: &Path) -> i32 {
    let root = root.to_path_buf();
    helper("pop3helper", |pipe| {
        mta::pop3d::helper::serve(env, root, pipe)
    })
}

/// Run a helper on a runtime of its own, its pipe being standard input and output.
fn helper<F, Fut>(name: &str, serve: F) -> i32
where
    F: FnOnce(mta::env::HelperPipe) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain!("mta {name}: cannot start: {e}");
            return EXIT_TEMP;
        }
    };
    let pipe = mta::env::HelperPipe {
        from: Box::new(tokio::io::stdin()),
        to: Box::new(tokio::io::stdout()),
    };
    match rt.block_on(serve(pipe)) {
        Ok(()) => 0,
        Err(e) => {
            complain!("mta {name}: {e}");
            EXIT_TEMP
        }
    }
}

/// `mta pop3d`: the POP3 server alone (and POP3S on `tls`), as this process's user (root:
/// it acts as each mailbox's owner), until SIGTERM or SIGINT.
pub fn pop3d(env: RealEnv, root: &Path, listen: SocketAddr, tls: Option<SocketAddr>) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain!("mta pop3d: cannot start: {e}");
            return EXIT_TEMP;
        }
    };
    match rt.block_on(serve_pop3(env, root, listen, tls)) {
        Ok(()) => 0,
        Err(e) => {
            complain!("mta pop3d: {e}");
            EXIT_TEMP
        }
    }
}

async fn serve_pop3(
    env: RealEnv,
    root: &Path,
    listen: SocketAddr,
    tls: Option<SocketAddr>,
) -> Result<(), String> {
    use mta::env::{Env, Listener, Net, Signal};
    let mut signals = env
        .signals()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (addr, name, tls_first) in [(Some(listen), "POP3", false), (tls, "POP3S", true)] {
        let Some(addr) = addr else { continue };
        let l = env
            .net()
            .listen(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let at = l.local_addr().unwrap_or(addr);
        env.stdout(&format!("mta: listening for {name} on {at}"));
        let serve = mta::pop3d::serve(
            env.clone(),
            root.to_path_buf(),
            l,
            stop_rx.clone(),
            tls_first,
            None,
        );
        servers.push(tokio::spawn(serve));
    }
    while let Some(sig) = signals.recv().await {
        if matches!(sig, Signal::Term | Signal::Int) {
            break;
        }
    }
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    Ok(())
}
