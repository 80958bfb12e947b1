//! srvctl: administer a running srvd (placeholder until the control socket lands).

fn main() -> std::process::ExitCode {
    eprintln!("srvctl: not implemented yet");
    std::process::ExitCode::from(2)
}
