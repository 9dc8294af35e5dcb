//! `mta run` on a real host: a runtime, then the one start-up path every simulated host uses.

use std::net::SocketAddr;
use std::path::Path;

use mta::daemon::{self, Options, EXIT_TEMP};
use mta::env::real::RealEnv;

/// `nameservers` empty: those of `/etc/resolv.conf`.
pub fn run(
    env: RealEnv,
    root: &Path,
    listen: SocketAddr,
    listen_tls: Option<SocketAddr>,
    nameservers: Vec<SocketAddr>,
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
    };
    rt.block_on(daemon::run(env, opts))
}

/// `mta lspawn`: the local-delivery helper `mta run` starts for itself while still root.
pub fn lspawn(env: RealEnv, root: &Path) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            complain!("mta lspawn: cannot start: {e}");
            return EXIT_TEMP;
        }
    };
    let pipe = mta::env::HelperPipe {
        from: Box::new(tokio::io::stdin()),
        to: Box::new(tokio::io::stdout()),
    };
    match rt.block_on(mta::local::lspawn::serve(env, root.to_path_buf(), pipe)) {
        Ok(()) => 0,
        Err(e) => {
            complain!("mta lspawn: {e}");
            EXIT_TEMP
        }
    }
}
