//! `nodewright create-tables`: the five DynamoDB tables, for local runs against an emulator (or a
//! scratch account). Production tables come from infra/template.yaml. Idempotent: existing tables
//! are left as they are.

use nodewright_aws::state::{TableNames, create_tables};

use crate::exit;

#[derive(clap::Args)]
pub struct Args {
    /// Table name prefix (the functions' NODEWRIGHT_TABLE_PREFIX).
    #[arg(long, env = "NODEWRIGHT_TABLE_PREFIX", default_value = "nodewright")]
    table_prefix: String,
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// DynamoDB endpoint, e.g. a local moto server.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
}

pub fn run(args: &Args) -> u8 {
    let names = match TableNames::new(&args.table_prefix) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: --table-prefix: {e}");
            return exit::USAGE;
        }
    };
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let clients = crate::aws_clients(args.region.clone(), args.endpoint_url.clone()).await;
        create_tables(&clients.dynamodb, &names).await
    });
    match result {
        Ok(()) => {
            let all: Vec<String> = nodewright_aws::state::tables::TABLES
                .iter()
                .map(|t| names.name(t.table))
                .collect();
            println!("tables ready: {}", all.join(", "));
            exit::OK
        }
        Err(e) => {
            let at = args.endpoint_url.as_deref().unwrap_or("the region's DynamoDB endpoint");
            eprintln!("error: cannot create the tables at {at}: {e}");
            eprintln!("hint: {}", crate::aws_hint(&e));
            exit::UNREACHABLE
        }
    }
}
