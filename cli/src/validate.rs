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
    let mut files = Vec::with_capacity(args.files.len());
    for f in &args.files {
        match read_file(f) {
            Ok(t) => files.push((t, f.display().to_string())),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        }
    }
    // One configuration: a NodePool's nodeClassRef may name a class in another of the files.
    let (config, diags) = Config::parse_all_with(&files, crate::unknown_fields());
    for w in &diags.warnings {
        println!("warning: {w}");
    }
    for e in &diags.errors {
        println!("error: {e}");
    }
    match config {
        Some(c) => {
            println!(
                "ok: {} pool(s), {} node class(es)",
                c.node_pools.len(),
                c.node_classes.len()
            );
            exit::OK
        }
        None => {
            println!("{} error(s); configuration is invalid", diags.errors.len());
            exit::INVALID
        }
    }
}
