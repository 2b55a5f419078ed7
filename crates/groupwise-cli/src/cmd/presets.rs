//! `groupwise presets`: list the built-in presets, or print one resolved.

use anyhow::{Context, Result};

use crate::args::PresetsArgs;
use crate::presets;

/// Prints the preset list, or with `--show` one preset's resolved config as TOML or JSON.
pub fn run(args: PresetsArgs) -> Result<()> {
    if let Some(name) = args.show {
        let config = presets::preset(&name)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&config)?);
        } else {
            print!("{}", toml::to_string(&config).context("config as TOML")?);
        }
        return Ok(());
    }
    for name in presets::names() {
        println!("{name:<28} {}", presets::describe(name));
    }
    Ok(())
}
