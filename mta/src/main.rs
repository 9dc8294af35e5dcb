//! `mta`: the command-line front end (real host).

mod cli;

fn main() {
    std::process::exit(cli::main());
}
