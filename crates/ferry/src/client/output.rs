//! Where the client commands' results go: the format asked for (`--output`) and stdout,
//! written so that a reader that has gone away ends the process quietly. Its own file
//! so that the commands ([`super`]) and `--wait`'s progress ([`super::progress`]) both
//! use it without using each other.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// [`out`] with a newline, formatted like `println!`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::client::output::out(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Writes `text` to stdout. When the reader has gone (`ferry run list | head -1`), the
/// process ends as one killed by SIGPIPE would (141) instead of panicking as `print!`
/// does.
pub fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}
