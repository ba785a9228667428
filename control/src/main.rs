//! `vigil-control`: the control service and its command-line client. See
//! `vigil-control help` and the crate docs of `vigil_control`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = vigil_control::cli::main(args);
    std::process::exit(code);
}
