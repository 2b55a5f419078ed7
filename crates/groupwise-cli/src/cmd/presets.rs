//! `groupwise presets`: list the built-in presets, or print one resolved.

use std::io::Write;

use anyhow::{Context, Result};

use crate::args::PresetsArgs;
use crate::presets;
use crate::stdout::stdout;

/// Prints the preset list, or with `--show` one preset's resolved config as TOML or JSON.
pub fn run(args: PresetsArgs) -> Result<()> {
    let mut out = stdout();
    if let Some(name) = args.show {
        let config = presets::preset(&name)?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&config)?)?;
        } else {
            write!(
                out,
                "{}",
                toml::to_string(&config).context("config as TOML")?
            )?;
        }
        return Ok(());
    }
    for name in presets::names() {
        writeln!(out, "{name:<28} {}", presets::describe(name))?;
    }
    Ok(())
}
