//! `cargo bench -p litemux-bench --bench compare [-- --quick] [-- --help]`: see the
//! `litemux_bench` crate docs for what is measured and how.

fn main() -> std::process::ExitCode {
    litemux_bench::main()
}
