//! srvctl: administer a running srvd (see docs/srvctl.md). All logic is in
//! `srvd::cli`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(srvd::cli::main(std::env::args_os()))
}
