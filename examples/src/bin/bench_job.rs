//! The benchmark job as a binary (see `gregor_examples::bench`), so that
//! benchmarks can run it as users run jobs, e.g. in the `process` mode.

fn main() -> std::process::ExitCode {
    gregor_examples::bench::app().main()
}
