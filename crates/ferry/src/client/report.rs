//! `ferry report ID [--format html|json] [--output-file FILE]`: the evidence report of
//! a run or a plan run (docs/report.md), as the server builds it — one self-contained
//! HTML file that prints to PDF, or its JSON with the digest — written to stdout or to
//! a file. The body is written as the server sent it, so the digest in it still checks.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::api::Request;
use super::{ConnectionArgs, Failure, main_of};

/// What `ferry report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One self-contained HTML file (styles and timeline inline; prints to PDF).
    Html,
    /// The report's facts as JSON, with their digest (docs/report.schema.json).
    Json,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Json => "json",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run's id or a plan run's id (`ferry run list`, `ferry plan runs PLAN`).
    pub id: String,
    /// `html` (the default) or `json`.
    #[arg(long, value_enum, default_value_t = Format::Html)]
    pub format: Format,
    /// Write the report to this file instead of stdout (replaced whole: written
    /// beside it first, then renamed).
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
}

/// `ferry report …`.
pub async fn report(args: ReportArgs, connection: &ConnectionArgs) -> ExitCode {
    main_of(connection, |api| async move {
        let (_, body) = api
            .send_text(Request::report(&args.id, args.format.as_str()))
            .await?;
        match &args.output_file {
            None => {
                let mut out = std::io::stdout().lock();
                // A closed pipe (`| head`) is not the report's failure.
                let _ = out.write_all(body.as_bytes()).and_then(|()| out.flush());
            }
            Some(path) => {
                write_file(path, &body)?;
                eprintln!(
                    "wrote the {} report of {} to {}",
                    args.format.as_str(),
                    args.id,
                    path.display()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Writes `body` to `path` whole: into a file beside it, then renamed over it.
fn write_file(path: &Path, body: &str) -> Result<(), Failure> {
    let failed = |e: std::io::Error| Failure::Local {
        code: "write_failed",
        message: format!("cannot write the report to {}: {e}", path.display()),
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| failed(std::io::Error::other("it names no file")))?;
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    std::fs::write(&partial, body).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        failed(e)
    })
}
