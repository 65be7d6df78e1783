//! `nodewright validate FILE...`

use std::path::PathBuf;

use nodewright_core::Config;

use crate::{exit, read_file};

#[derive(clap::Args)]
pub struct Args {
    /// Configuration files (multi-document YAML or JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: &Args) -> u8 {
    let mut errors = 0;
    let mut pools = 0;
    let mut classes = 0;
    for f in &args.files {
        let text = match read_file(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        };
        let (config, diags) = Config::parse(&text, &f.display().to_string());
        for w in &diags.warnings {
            println!("warning: {w}");
        }
        for e in &diags.errors {
            println!("error: {e}");
        }
        errors += diags.errors.len();
        if let Some(c) = config {
            pools += c.node_pools.len();
            classes += c.node_classes.len();
        }
    }
    if errors > 0 {
        println!("{errors} error(s); configuration is invalid");
        exit::INVALID
    } else {
        println!("ok: {pools} pool(s), {classes} node class(es)");
        exit::OK
    }
}
