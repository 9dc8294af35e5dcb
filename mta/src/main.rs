//! `mta`: the command-line front end (real host).

/// `eprintln!` without its panic: a closed stderr is no reason for a backtrace.
macro_rules! complain {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod cli;
mod owners;
mod run;

fn main() {
    std::process::exit(cli::main());
}
