use std::process::ExitCode;

fn main() -> ExitCode {
    kdharness::cli::main()
}
