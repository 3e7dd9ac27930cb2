//! The client commands: `ferry vm …`, `ferry failover …`, `ferry run …`, `ferry plan …`
//! (in [`plans`]) against a server's REST API (docs/cli.md is the operator's reference).
//!
//! - [`api`]: a typed client of the REST API, one method per route;
//! - [`render`]: the tables `--output table` prints;
//! - [`progress`]: following a run until it ends (`--wait`, `ferry run watch`);
//! - [`appliances`] (`ferry appliance …`) and [`report`] (`ferry report ID`).
//!
//! `--output json` prints the API's body exactly as it came, one document per command
//! (an error's body too, on stdout, while its message goes to stderr). The exit code
//! says how it went: 0 success; 1 the operation failed (a followed run ended other than
//! `done`, or the server failed); 2 bad usage, a refused request (4xx), a server that
//! cannot be reached, no token, or an unreadable file; 130 Ctrl-C stopped following a
//! run (not the run).

pub mod api;
pub mod appliances;
mod output;
pub mod plans;
pub mod progress;
pub mod render;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use secrecy::SecretString;
use server::model::{
    AddVm, DefinitionFormat, ErrorBody, ErrorDetail, RunDetail, RunSummary, TestMode, UpdateVm,
    VmDetail, VmSummary, VmUpdated,
};

use api::{Api, ClientError, Raw, Request};
pub use output::Output;
use output::{out, outln};

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "FERRY_SERVER",
        default_value = "http://127.0.0.1:8470"
    )]
    pub server: String,
    /// File holding the API token (else FERRY_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// How to print results: `table` for people, `json` for programs (the API's
    /// bodies, unchanged; see docs/cli.md).
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        default_value_t = Output::Table
    )]
    pub output: Output,
}

#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// Register a protected VM from its definition file (docs/vm-definition.md; JSON
    /// when the name ends in .json, else TOML). Every problem is reported; nothing is
    /// registered unless all checks pass.
    Add {
        /// The VM definition file.
        file: PathBuf,
    },
    /// Change a registered VM's definition at rest, from its whole definition file (the
    /// file's `name` says which VM; it cannot change). The same checks as `add`; only
    /// while the VM is ready_for_failover with no active run. The VM keeps its id, state
    /// and runs; what changed is printed and kept in its history. A file that changes
    /// nothing writes nothing.
    Update {
        /// The VM definition file.
        file: PathBuf,
        /// Check the file and print what it would change, writing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the protected VMs.
    List,
    /// Show a protected VM: spec, NICs, disks and where each replica is, its active
    /// run, and while failed over its target VM's device map.
    Show {
        /// The protected VM's name.
        name: String,
    },
    /// Remove a protected VM from ferry (nothing in CloudStack changes). Refused while
    /// it is failed over or has an active run. Its runs are kept (`ferry run list` names
    /// it `NAME (removed)`), and its name can be registered again. A VM with run history
    /// is only removed after a y/N question on the terminal, or with --yes.
    Remove {
        /// The protected VM's name.
        name: String,
        /// Remove it without asking, even if it has run history (for scripts; without a
        /// terminal to ask on, removing a VM with history needs it).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Record that replication resynchronised a VM's diverged replicas from the source.
    /// A replica is diverged when drift kept a cleanup or rollback from putting it back
    /// as the source had it (its snapshot deleted by hand, say); the VM's failovers are
    /// refused until this is recorded. `ferry vm show` lists them.
    Resynced {
        /// The protected VM's name.
        name: String,
        /// Only this replica volume (repeat for several); every diverged replica of
        /// the VM when omitted.
        #[arg(long = "replica", value_name = "VOLUME_ID")]
        replicas: Vec<String>,
    },
}

/// Follow the run until it ends, then print what happened; the exit code is the run's.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct WaitArgs {
    /// Follow the run until it ends (progress per step and per disk), then exit 0 if it
    /// is done, 1 if it unwound, is stuck or was abandoned.
    #[arg(long)]
    pub wait: bool,
}

/// A test failover's mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The replicas themselves go to the test VM (and come back at cleanup).
    #[default]
    Replica,
    /// New volumes made from snapshots go to the test VM; the replicas stay on the
    /// appliance, so replication goes on during the test.
    Clone,
}

impl From<Mode> for TestMode {
    fn from(mode: Mode) -> TestMode {
        match mode {
            Mode::Replica => TestMode::Replica,
            Mode::Clone => TestMode::Clone,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum FailoverCommand {
    /// Start a test failover: a test VM on the test networks with all the disks.
    Test {
        /// The protected VM's name.
        name: String,
        #[arg(long, value_enum, default_value_t = Mode::Replica)]
        mode: Mode,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start a live failover: the VM on the production networks with all the disks.
    Live {
        /// The protected VM's name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start the cleanup after a test failover: the test VM goes, the replicas come
    /// back to the appliance as they were.
    Cleanup {
        /// The protected VM's name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start the rollback of a live failover: everything back as before it.
    Rollback {
        /// The protected VM's name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start the commit of a live failover: it becomes final, and ferry lets the VM go.
    Commit {
        /// The protected VM's name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// Which run: its id, a unique prefix of its id, or `--vm NAME` for that VM's latest.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct RunRef {
    /// The run's id, or enough of its start to name one run only.
    id: Option<String>,
    /// Instead of an id: the latest run of this protected VM.
    #[arg(long, value_name = "NAME")]
    vm: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunCommand {
    /// List runs, newest first.
    List {
        /// Only the runs of this protected VM.
        #[arg(long)]
        vm: Option<String>,
        /// At most this many (1 to 1000; the server's default is 50).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Tell what happened in a run: each step with its timing, each CloudStack job, the
    /// error that made it unwind and, when it is stuck, what is stuck and what to do.
    Show {
        #[command(flatten)]
        run: RunRef,
    },
    /// Follow a run until it ends; exit 0 if it is done, 1 if not.
    Watch {
        #[command(flatten)]
        run: RunRef,
    },
    /// Ask a pending or running run to stop: it unwinds before its next step.
    Cancel {
        #[command(flatten)]
        run: RunRef,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Try a stuck run's failed undo again, after fixing what made it fail.
    Retry {
        #[command(flatten)]
        run: RunRef,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Give up on a stuck run: it no longer holds its VM, and what its failed undo left
    /// in CloudStack is the operator's to clean up.
    Abandon {
        #[command(flatten)]
        run: RunRef,
    },
}

/// How many of the runs an ambiguous prefix names are listed.
const AMBIGUOUS_SHOWN: usize = 10;

/// The run `run` names: an id as it is, the one run whose id starts with a prefix
/// (the server looks among all runs), or a VM's latest run. An unknown prefix or an
/// ambiguous one is refused with what matched.
async fn resolve(api: &Api, run: RunRef) -> Result<String, Failure> {
    if let Some(vm) = run.vm {
        let (runs, _) = api
            .typed::<Vec<RunSummary>>(Request::list_runs(Some(&vm), Some(1)))
            .await?;
        return match runs.into_iter().next() {
            Some(latest) => Ok(latest.id),
            None => Err(Failure::Local {
                code: "not_found",
                message: format!("{vm} has no runs yet; start one with `ferry failover test {vm}`"),
            }),
        };
    }
    let id = run.id.unwrap_or_default();
    if uuid::Uuid::try_parse(&id).is_ok() {
        return Ok(id);
    }
    let prefix = id.to_ascii_lowercase();
    if prefix.is_empty() {
        return Err(Failure::Local {
            code: "usage",
            message: "an empty run id; give a run's id or the start of it".into(),
        });
    }
    // One more than are shown: enough to tell one from several, and whether more
    // than are shown match.
    let (mut matches, _) = api
        .typed::<Vec<RunSummary>>(Request::runs_by_id_prefix(
            &prefix,
            AMBIGUOUS_SHOWN as i64 + 1,
        ))
        .await?;
    match matches.len() {
        0 => Err(Failure::Local {
            code: "not_found",
            message: format!(
                "no run {id}: no run's id starts with `{id}`; `ferry run list` lists the runs"
            ),
        }),
        1 => Ok(matches.remove(0).id),
        n => {
            let mut message = if n > AMBIGUOUS_SHOWN {
                format!(
                    "`{id}` is the start of more than {AMBIGUOUS_SHOWN} runs' ids; give more of it to name one:"
                )
            } else {
                format!("`{id}` is the start of {n} runs' ids; give more of it to name one:")
            };
            for r in matches.iter().take(AMBIGUOUS_SHOWN) {
                message.push_str(&format!("\n  {}", render::run_line(r)));
            }
            if n > AMBIGUOUS_SHOWN {
                message.push_str("\n  … and more");
            }
            Err(Failure::Local {
                code: "ambiguous",
                message,
            })
        }
    }
}

/// Why a command did not succeed, and so what it prints and how it exits.
enum Failure {
    /// The server refused, failed, or could not be asked.
    Client(ClientError),
    /// The command could not even ask: no token, a file that cannot be read, a bad URL.
    /// Exit 2.
    Local { code: &'static str, message: String },
}

impl From<ClientError> for Failure {
    /// The server's error, except where its message tells an API client what to send
    /// (a header, a query parameter): an operator at the CLI is told what to set or
    /// pass instead, under the API's code. (`confirmation_required` is `vm remove`'s.)
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Api { body, .. } if body.error.code == "unauthorized" => Failure::Local {
                code: "unauthorized",
                message: "the server refused the API token: FERRY_TOKEN (or the file given \
                          with --token-file) must hold the server's token — its FERRY_TOKEN, \
                          or the file its config's server.token_file names"
                    .to_string(),
            },
            _ => Failure::Client(e),
        }
    }
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            // The server failed to carry out a request it accepted as valid.
            Failure::Client(e) if e.status().is_some_and(|s| s >= 500) => ExitCode::from(1),
            _ => ExitCode::from(2),
        }
    }

    fn body(&self) -> ErrorBody {
        match self {
            Failure::Client(e) => e.body(),
            Failure::Local { code, message } => ErrorBody {
                error: ErrorDetail {
                    code: code.to_string(),
                    message: message.clone(),
                    problems: Vec::new(),
                },
            },
        }
    }

    /// The message on stderr; in JSON mode the error body on stdout too.
    fn report(self, output: Output) -> ExitCode {
        match &self {
            Failure::Client(e) => eprintln!("error: {e}"),
            Failure::Local { message, .. } => eprintln!("error: {message}"),
        }
        if output == Output::Json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&self.body()).expect("an error body serializes")
            );
        }
        self.exit_code()
    }
}

type Outcome = Result<ExitCode, Failure>;

/// Prints the body as it came (JSON) or as `table` renders it.
fn print(output: Output, raw: &Raw, table: impl FnOnce() -> String) {
    match output {
        Output::Json => outln!("{}", raw.pretty()),
        Output::Table => out(&table()),
    }
}

/// The API client for these arguments: the server's URL checked, the token read from
/// `--token-file` or FERRY_TOKEN.
fn connect(connection: &ConnectionArgs) -> Result<Api, Failure> {
    let url = connection.server.trim();
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
        _ => {
            return Err(Failure::Local {
                code: "usage",
                message: format!(
                    "the server URL `{url}` is not an http:// or https:// URL; set --server or \
                     FERRY_SERVER, e.g. http://127.0.0.1:8470"
                ),
            });
        }
    }
    let token = match &connection.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Local {
                code: "no_token",
                message: format!("cannot read the token file {}: {e}", path.display()),
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => std::env::var("FERRY_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() {
        let message = match &connection.token_file {
            Some(path) => format!(
                "the token file {} is empty; it must hold the server's API token",
                path.display()
            ),
            None => "no API token: set FERRY_TOKEN to the server's token, or pass \
                     --token-file FILE"
                .to_string(),
        };
        return Err(Failure::Local {
            code: "no_token",
            message,
        });
    }
    Ok(Api::new(url, SecretString::from(token)))
}

/// Runs a command body and turns its failure into a message and an exit code.
async fn main_of<F>(connection: &ConnectionArgs, body: impl FnOnce(Api) -> F) -> ExitCode
where
    F: Future<Output = Outcome>,
{
    let outcome = match connect(connection) {
        Ok(api) => body(api).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => failure.report(connection.output),
    }
}

/// `ferry vm …`.
pub async fn vm(command: VmCommand, connection: &ConnectionArgs) -> ExitCode {
    let output = connection.output;
    main_of(connection, |api| async move {
        match command {
            VmCommand::Add { file } => vm_add(&api, &file, output).await,
            VmCommand::Update { file, dry_run } => vm_update(&api, &file, dry_run, output).await,
            VmCommand::List => {
                let (vms, raw) = api.typed::<Vec<VmSummary>>(Request::list_vms()).await?;
                print(output, &raw, || render::vm_list(&vms));
                Ok(ExitCode::SUCCESS)
            }
            VmCommand::Show { name } => {
                let (vm, raw) = api.typed::<VmDetail>(Request::show_vm(&name)).await?;
                print(output, &raw, || render::vm_table(&vm));
                Ok(ExitCode::SUCCESS)
            }
            VmCommand::Remove { name, yes } => vm_remove(&api, &name, yes, output).await,
            VmCommand::Resynced { name, replicas } => {
                let (vm, raw) = api
                    .typed::<VmDetail>(Request::record_resync(&name, &replicas))
                    .await?;
                print(output, &raw, || {
                    format!(
                        "Recorded: the resynchronised replicas of {name} are trusted again.\n\n{}",
                        render::vm_table(&vm)
                    )
                });
                Ok(ExitCode::SUCCESS)
            }
        }
    })
    .await
}

/// `ferry vm remove NAME [--yes]`: a VM with run history is removed only once confirmed
/// (the server answers 409 `confirmation_required` to a request without `confirm`), by
/// `--yes` or by the operator answering `y` on the terminal.
async fn vm_remove(api: &Api, name: &str, yes: bool, output: Output) -> Outcome {
    match api.send(Request::remove_vm(name, yes)).await {
        Ok(_) => {}
        Err(ClientError::Api { body, .. }) if body.error.code == "confirmation_required" => {
            let kept = format!(
                "Its runs are kept (`ferry run list` shows them as `{name} (removed)`), but \
                 ferry forgets the VM: it can no longer fail it over or roll it back. Nothing \
                 in CloudStack changes."
            );
            if !asking_is_possible() {
                return Err(Failure::Local {
                    code: "confirmation_required",
                    message: format!(
                        "not removed: {name} has run history, and without a terminal ferry \
                         cannot ask whether to remove it; pass --yes to remove it. {kept}"
                    ),
                });
            }
            if !confirmed(&format!(
                "{name} has run history. {kept}\nRemove {name}? [y/N] "
            )) {
                return Err(Failure::Local {
                    code: "not_confirmed",
                    message: format!("not removed: {name} is still registered"),
                });
            }
            api.send(Request::remove_vm(name, true)).await?;
        }
        Err(e) => return Err(e.into()),
    }
    match output {
        // The API answers 204 without a body; this is the CLI's own document.
        Output::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "removed": name }))
                .expect("JSON prints")
        ),
        Output::Table => outln!(
            "Removed {name} from ferry. Nothing in CloudStack changed: its replica \
             volumes stay where they are."
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a question can be put to the operator: stdin and stderr are a terminal.
fn asking_is_possible() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks `question` on stderr; true only for an answer of `y` or `yes`.
fn confirmed(question: &str) -> bool {
    use std::io::Write as _;
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    match std::io::stdin().read_line(&mut answer) {
        Ok(_) => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        Err(_) => false,
    }
}

/// A definition file's text and its format (JSON when its name ends in `.json`).
fn read_definition(file: &Path) -> Result<(String, DefinitionFormat), Failure> {
    let definition = std::fs::read_to_string(file).map_err(|e| Failure::Local {
        code: "unreadable_file",
        message: format!("cannot read the VM definition file {}: {e}", file.display()),
    })?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("json") => DefinitionFormat::Json,
        _ => DefinitionFormat::Toml,
    };
    Ok((definition, format))
}

async fn vm_add(api: &Api, file: &Path, output: Output) -> Outcome {
    let (definition, format) = read_definition(file)?;
    let (vm, raw) = api
        .typed::<VmDetail>(Request::add_vm(&AddVm { definition, format }))
        .await?;
    print(output, &raw, || {
        format!(
            "Registered {} with {} disk(s); it is {}.\n\n{}",
            vm.name,
            vm.disks.len(),
            vm.state,
            render::vm_table(&vm)
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `ferry vm update FILE [--dry-run]`: the file goes to the VM it names.
async fn vm_update(api: &Api, file: &Path, dry_run: bool, output: Output) -> Outcome {
    let (definition, format, name) =
        named_definition(file, "the VM definition", "VM", "docs/vm-definition.md")?;
    let request = UpdateVm {
        definition,
        format,
        dry_run,
    };
    let (updated, raw) = api
        .typed::<VmUpdated>(Request::update_vm(&name, &request))
        .await?;
    print(output, &raw, || render::vm_updated(&updated));
    Ok(ExitCode::SUCCESS)
}

/// An update's file: its text, format and `name` (all the client reads of it).
fn named_definition(
    file: &Path,
    what: &str,
    kind: &str,
    doc: &str,
) -> Result<(String, DefinitionFormat, String), Failure> {
    let (definition, format) = read_definition(file)?;
    let name = definition_name(&definition, format).map_err(|why| Failure::Local {
        code: "invalid",
        message: format!(
            "{what} was refused and nothing was changed: {} {why}, so ferry cannot tell \
             which {kind} it updates ({doc})",
            file.display()
        ),
    })?;
    Ok((definition, format, name))
}

/// The `name` a definition file gives, or why it gives none.
fn definition_name(text: &str, format: DefinitionFormat) -> Result<String, String> {
    let tree: serde_json::Value = match format {
        DefinitionFormat::Toml => toml::from_str::<toml::Table>(text)
            .map_err(|e| format!("is not TOML ({})", e.message()))
            .and_then(|t| serde_json::to_value(t).map_err(|e| e.to_string()))?,
        DefinitionFormat::Json => {
            serde_json::from_str(text).map_err(|e| format!("is not JSON ({e})"))?
        }
    };
    match tree.get("name") {
        Some(serde_json::Value::String(name)) => Ok(name.clone()),
        Some(_) => Err("has a `name` that is not a string".into()),
        None => Err("has no `name`".into()),
    }
}

/// `ferry failover …`.
pub async fn failover(command: FailoverCommand, connection: &ConnectionArgs) -> ExitCode {
    let output = connection.output;
    main_of(connection, |api| async move {
        let (request, wait) = match &command {
            FailoverCommand::Test { name, mode, wait } => {
                (Request::start_test_failover(name, (*mode).into()), wait)
            }
            FailoverCommand::Live { name, wait } => (Request::start(name, "live-failover"), wait),
            FailoverCommand::Cleanup { name, wait } => (Request::start(name, "cleanup"), wait),
            FailoverCommand::Rollback { name, wait } => (Request::start(name, "rollback"), wait),
            FailoverCommand::Commit { name, wait } => (Request::start(name, "commit"), wait),
        };
        let (run, raw) = api.typed::<RunSummary>(request).await?;
        if wait.wait {
            if output == Output::Table {
                outln!("Started {}.", render::run_line(&run));
            }
            return follow(&api, &run.id, output).await;
        }
        print(output, &raw, || {
            format!(
                "Started {}.\nFollow it with `ferry run watch {id}`; `ferry run show {id}` tells \
                 what happened.\n",
                render::run_line(&run),
                id = run.id
            )
        });
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Follows a run to its end; prints the final detail in JSON mode. Exit 0 when it is
/// done, 1 when not, 130 when Ctrl-C stopped the following (not the run).
async fn follow(api: &Api, id: &str, output: Output) -> Outcome {
    match progress::follow_raw(api, id, output).await? {
        progress::Followed::Settled(detail, raw) => {
            if output == Output::Json {
                outln!("{}", raw.pretty());
            }
            Ok(run_exit_code(&detail))
        }
        // As a shell reports a command Ctrl-C stopped: 128 + SIGINT.
        progress::Followed::Interrupted => Ok(ExitCode::from(130)),
    }
}

fn run_exit_code(detail: &RunDetail) -> ExitCode {
    if detail.run.state == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `ferry run …`.
pub async fn run(command: RunCommand, connection: &ConnectionArgs) -> ExitCode {
    let output = connection.output;
    main_of(connection, |api| async move {
        match command {
            RunCommand::List { vm, limit } => {
                let (runs, raw) = api
                    .typed::<Vec<RunSummary>>(Request::list_runs(vm.as_deref(), limit))
                    .await?;
                print(output, &raw, || render::run_list(&runs));
                Ok(ExitCode::SUCCESS)
            }
            RunCommand::Show { run } => {
                let id = resolve(&api, run).await?;
                let (detail, raw) = api.typed::<RunDetail>(Request::show_run(&id)).await?;
                print(output, &raw, || render::run_detail(&detail));
                Ok(ExitCode::SUCCESS)
            }
            RunCommand::Watch { run } => {
                let id = resolve(&api, run).await?;
                follow(&api, &id, output).await
            }
            RunCommand::Cancel { run, wait } => {
                let id = resolve(&api, run).await?;
                let (run, raw) = api
                    .typed::<RunSummary>(Request::run_action(&id, "cancel"))
                    .await?;
                changed(&api, output, &run, &raw, wait, || {
                    format!(
                        "Cancel requested for {}: it unwinds before its next step.\n",
                        render::run_line(&run)
                    )
                })
                .await
            }
            RunCommand::Retry { run, wait } => {
                let id = resolve(&api, run).await?;
                let (run, raw) = api
                    .typed::<RunSummary>(Request::run_action(&id, "retry"))
                    .await?;
                changed(&api, output, &run, &raw, wait, || {
                    format!(
                        "Retrying the failed undo of {}: it unwinds again from there.\n",
                        render::run_line(&run)
                    )
                })
                .await
            }
            RunCommand::Abandon { run } => {
                let id = resolve(&api, run).await?;
                let (run, raw) = api
                    .typed::<RunSummary>(Request::run_action(&id, "abandon"))
                    .await?;
                print(output, &raw, || {
                    format!(
                        "Abandoned {}. It no longer holds {vm}; whatever its failed undo left \
                         in CloudStack is yours to clean up (`ferry run show {id}` lists the \
                         steps not undone).\n",
                        render::run_line(&run),
                        vm = run.vm,
                        id = run.id
                    )
                });
                Ok(ExitCode::SUCCESS)
            }
        }
    })
    .await
}

/// After a cancel or retry: what was done, then the run followed with `--wait`.
async fn changed(
    api: &Api,
    output: Output,
    run: &RunSummary,
    raw: &Raw,
    wait: WaitArgs,
    table: impl FnOnce() -> String,
) -> Outcome {
    if wait.wait {
        if output == Output::Table {
            out(&table());
        }
        return follow(api, &run.id, output).await;
    }
    print(output, raw, table);
    Ok(ExitCode::SUCCESS)
}
