//! The `clancy` binary: see [`clancy::cli`].

fn main() -> std::process::ExitCode {
    clancy::cli::main()
}
