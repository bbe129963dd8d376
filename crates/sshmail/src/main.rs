#![forbid(unsafe_code)]

fn main() {
    std::process::exit(sshmail::cli::main());
}
