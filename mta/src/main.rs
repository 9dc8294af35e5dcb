//! `mta`: the command-line front end (real host).

mod cli;
mod run;

fn main() {
    std::process::exit(cli::main());
}
