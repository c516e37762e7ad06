//! The `racknap-proxy` binary: everything lives in the library; this is the door.

fn main() -> std::process::ExitCode {
    racknap_proxy::cli::main()
}
