use clap::Parser;
use d2v::cli::Cli;
use std::io::Write;

fn main() {
    // d2v is also the guest's init (multi-call binary): see d2v::init.
    if let Some(argv0) = std::env::args_os().next() {
        if d2v::init::is_init(&argv0, std::process::id()) {
            d2v::init::main();
        }
    }
    // First, before any thread starts: SIGINT, SIGTERM and SIGHUP then remove d2v's temporary
    // files. Without it they would still end d2v, only leaving named temporaries behind.
    if let Err(e) = d2v::interrupt::install() {
        let _ = writeln!(std::io::stderr(), "d2v: warning: signal handling: {e}");
    }
    let cli = Cli::parse();
    let code = match d2v::pipeline::run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            let mut shown = e.to_string();
            // Never panic on a closed or full stderr.
            let _ = writeln!(std::io::stderr(), "d2v: error: {shown}");
            // Causes whose text the message already includes are not repeated.
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let text = s.to_string();
                if !shown.contains(&text) {
                    let _ = writeln!(std::io::stderr(), "  caused by: {text}");
                    shown.push_str(&text);
                }
                src = s.source();
            }
            1
        }
    };
    std::process::exit(code);
}
