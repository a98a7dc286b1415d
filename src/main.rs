fn main() {
    std::process::exit(netsleuth::cli::main());
}
