use clap::Parser;
use d2v::cli::Cli;

fn main() {
    let cli = Cli::parse();
    let code = match d2v::pipeline::run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("d2v: error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            1
        }
    };
    std::process::exit(code);
}
