//! `nodewright restamp FILE`: a sample event moved to the present, for `cargo lambda invoke`. The
//! functions refuse events more than a day from their clock, and the samples in events/ are dated
//! when they were captured.

use crate::exit;

#[derive(clap::Args)]
pub struct Args {
    /// The event file (EventBridge JSON).
    file: std::path::PathBuf,
}

pub fn run(args: &Args) -> u8 {
    let text = match crate::read_file(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let mut event: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {}: not JSON: {e}", args.file.display());
            return exit::INVALID;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if nodewright_core::time::restamp_event(&mut event, now).is_none() {
        eprintln!(
            "error: {}: time: missing or not RFC 3339; there is no envelope time to move",
            args.file.display()
        );
        return exit::INVALID;
    }
    match serde_json::to_string_pretty(&event) {
        Ok(s) => {
            println!("{s}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}
