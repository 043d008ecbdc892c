//! `celery-cnc`: the command-and-control center for Celery clusters, and
//! one-shot commands on a broker.
//!
//! # The service
//!
//! * `celery-cnc run [--broker URL]... [--backend URL] [--db PATH|URL]
//!   [--purge-db] [--host ADDR] [--port N] [--basic-auth USER:PASS]
//!   [--no-web] [--prometheus [HOST:]PORT] [--otlp-endpoint URL]
//!   [--batch-size N] [--batch-interval DURATION] [--config FILE]`
//!   listens to every broker and stores the events until SIGINT/SIGTERM,
//!   which writes the last batch and stops. Each `--broker` becomes a Celery
//!   app named after its host and db or vhost (`127.0.0.1/0`; `app1..n`
//!   when those clash).
//! * `celery-cnc check-config [same flags]` prints the effective
//!   configuration with passwords hidden, or every error (exit 2).
//! * `celery-cnc gen-config` prints every setting with its default and its
//!   documentation, as TOML to start a config file from.
//!
//! The configuration is layered, later layers winning field by field:
//! defaults < `--config` file < `CELERY_CNC__SECTION__FIELD` environment
//! variables < flags (see `cnc_core::config::ConfigLoader`).
//!
//! # One-shot commands on a broker
//!
//! They take `--broker URL` (default: `$CELERY_CNC_BROKER`, else
//! `redis://127.0.0.1:6379/0`) and print a table, or JSON with `--json`:
//!
//! * `inspect <verb>`: `ping`, `stats`, `active`, `reserved`, `scheduled`,
//!   `registered [ATTR]...`, `active_queues`, `conf [--with-defaults]`,
//!   `revoked`, `query_task ID...`, `report`, `clock`; with
//!   `--destination NODE[,NODE]` (or one glob, `w1@*`) and `--timeout`.
//!   JSON is one object `{worker: reply}`.
//! * `control <verb>`: `pool-grow N`, `pool-shrink N`, `autoscale MAX MIN`,
//!   `add-consumer QUEUE`, `cancel-consumer QUEUE`, `rate-limit TASK RATE`,
//!   `time-limit TASK SOFT HARD`, `shutdown` (every worker only with
//!   `--yes`), `pool-restart`, `enable-events`, `disable-events` (Celery's
//!   underscore names work too); `--destination`, `--timeout`.
//! * `revoke ID... [--terminate [--signal SIG]]`.
//! * `send TASK [--args JSON] [--kwargs JSON] [--queue Q] [--countdown D]
//!   [--eta TIME] [--expires D|TIME] [--priority N] [--id ID]` prints the
//!   task id.
//! * `queues [QUEUE]...`: depth, consumers and consuming workers of every
//!   queue found on the broker or in the workers' `active_queues`.
//! * `purge QUEUE [--task NAME | --group ID] --yes`.
//! * `result ID --backend URL [--wait D]` (`$CELERY_CNC_BACKEND`).
//! * `events [--count N] [--timeout D] [--type PREFIX]`: decoded events as
//!   JSON lines until Ctrl-C.
//!
//! # The stored history
//!
//! * `tasks [--state S]... [--worker W] [--name N] [--since D] [--search
//!   TEXT] [--limit N] [--db PATH|URL] [--json]`, newest first.
//! * `workers [--db PATH|URL] [--json]`.
//!
//! # Exit codes
//!
//! 0 success; 1 runtime failure (broker, backend or store unreachable or
//! failing, or a worker answered with an error); 2 bad usage or invalid
//! configuration; 3 nothing to show (no worker replied, a named worker did
//! not, no stored result, `--count` events not seen in time, no database).
//! Failures are one line on stderr (`celery-cnc: cannot reach broker
//! redis://127.0.0.1:1/0: connection refused`); passwords in URLs are
//! always shown as `***`.

mod broker_cmd;
mod config_cmd;
mod exit;
mod gen_config;
mod history;
mod run;
mod table;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit::{CmdResult, Failure};

const EXIT_CODES: &str = "\
Exit codes: 0 success; 1 runtime failure (broker, backend or store failing, \
or a worker answered with an error); 2 bad usage or invalid configuration; \
3 nothing to show (no worker replied, no result, too few events).";

/// Command-and-control for Celery clusters: run the service, inspect and
/// control workers, query the stored history.
#[derive(Debug, Parser)]
#[command(name = "celery-cnc", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: listen to the brokers and store the history.
    Run(config_cmd::ConfigArgs),
    /// Print the effective configuration (passwords hidden), or every error.
    CheckConfig {
        #[command(flatten)]
        config: config_cmd::ConfigArgs,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Print every setting with its default and documentation, as TOML.
    GenConfig,
    /// Ask the workers (ping, stats, active, registered…).
    Inspect(broker_cmd::InspectArgs),
    /// Tell the workers (pool-grow, add-consumer, rate-limit, shutdown…).
    Control(broker_cmd::ControlArgs),
    /// Revoke tasks; `--terminate` kills running ones.
    Revoke(broker_cmd::RevokeArgs),
    /// Send a task; prints its id.
    Send(broker_cmd::SendArgs),
    /// Queue depths and consumers.
    Queues(broker_cmd::QueuesArgs),
    /// Delete ready messages from a queue (all, or one task name or group).
    Purge(broker_cmd::PurgeArgs),
    /// The stored result of a task.
    Result(broker_cmd::ResultArgs),
    /// Stream decoded events as JSON lines.
    Events(broker_cmd::EventsArgs),
    /// List stored tasks, newest first.
    Tasks(history::TasksArgs),
    /// List stored workers.
    Workers(history::DbArgs),
}

fn main() -> std::process::ExitCode {
    // Every subcommand's --help ends with the exit codes too.
    let matches = Cli::command()
        .mut_subcommands(|c| c.after_help(EXIT_CODES))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `run` logs through the service's own log controller (files under
    // `logging.directory`, and stderr); the one-shot commands only warn.
    if !matches!(cli.command, Command::Run(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("celery-cnc: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(exit::RUNTIME);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            if !message.is_empty() {
                eprintln!("celery-cnc: {message}");
            }
            std::process::ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command) -> CmdResult {
    match command {
        Command::Run(args) => {
            let cfg = args.load_for_run()?;
            run::run(cfg).await
        }
        Command::CheckConfig { config, json } => config_cmd::check_config(&config, json),
        Command::GenConfig => broker_cmd::out(gen_config::generate().trim_end()),
        Command::Inspect(a) => broker_cmd::inspect(a).await,
        Command::Control(a) => broker_cmd::control(a).await,
        Command::Revoke(a) => broker_cmd::revoke(a).await,
        Command::Send(a) => broker_cmd::send(a).await,
        Command::Queues(a) => broker_cmd::queues(a).await,
        Command::Purge(a) => broker_cmd::purge(a).await,
        Command::Result(a) => broker_cmd::result(a).await,
        Command::Events(a) => broker_cmd::events(a).await,
        Command::Tasks(a) => history::tasks(a).await,
        Command::Workers(a) => history::workers(a).await,
    }
}
