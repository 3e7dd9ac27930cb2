//! `ferry appliance list | show NAME`: the appliances and their volume agents.

use std::process::ExitCode;

use super::api::Request;
use super::{ConnectionArgs, main_of, print, render};

#[derive(Debug, clap::Subcommand)]
pub enum ApplianceCommand {
    /// List the appliances: each one's volume agent (reachable or not, version,
    /// journal backlog), the replicas it holds and its free data-volume slots.
    List,
    /// Show one appliance.
    Show { name: String },
}

/// `ferry appliance …`.
pub async fn appliance(command: ApplianceCommand, connection: &ConnectionArgs) -> ExitCode {
    let output = connection.output;
    main_of(connection, |api| async move {
        match command {
            ApplianceCommand::List => {
                let (all, raw) = api
                    .typed::<Vec<server::appliances::ApplianceView>>(Request::list_appliances())
                    .await?;
                print(output, &raw, || render::appliance_list(&all));
            }
            ApplianceCommand::Show { name } => {
                let (one, raw) = api
                    .typed::<server::appliances::ApplianceView>(Request::show_appliance(&name))
                    .await?;
                print(output, &raw, || render::appliance_table(&one));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}
