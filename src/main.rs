fn main() {
    eprintln!("d2v: no commands yet");
    std::process::exit(2);
}
