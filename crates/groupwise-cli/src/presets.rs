//! Named presets: the TOML files under `configs/`, embedded at build time.
//!
//! A preset is a partial [`RunConfig`] in TOML with an optional `base = "NAME"` (another preset, or a
//! path to a `.toml` file relative to this one): the base is read first and this file's values replace
//! its values key by key. Tables merge key by key too (`[data]`, `[loss]`, `[sgd]`), except a table with
//! a `kind` (`[schedule]`, `[aux_input]`), which is an enum and replaces the base's whole. The merged
//! table must be a complete config; unknown keys are errors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use groupwise::train::RunConfig;

include!(concat!(env!("OUT_DIR"), "/presets.rs"));

/// Names of the built-in presets, in file order.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// Where a preset's text comes from.
#[derive(Clone, Debug)]
enum Source {
    /// Name and text of a built-in preset.
    Builtin(&'static str, &'static str),
    File(PathBuf),
}

impl Source {
    fn find(name: &str, relative_to: Option<&Path>) -> Result<Source> {
        if let Some(&(n, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
            return Ok(Source::Builtin(n, text));
        }
        if name.ends_with(".toml") {
            let path = match relative_to {
                Some(dir) => dir.join(name),
                None => PathBuf::from(name),
            };
            return Ok(Source::File(path));
        }
        let close: Vec<&str> = names()
            .filter(|n| n.contains(name) || name.contains(*n))
            .take(8)
            .collect();
        let hint = if close.is_empty() {
            "`groupwise presets` lists them".to_string()
        } else {
            format!(
                "did you mean {}? (`groupwise presets` lists them)",
                close.join(", ")
            )
        };
        bail!("unknown preset '{name}' (a name under configs/, or a path ending in .toml); {hint}")
    }

    fn read(&self) -> Result<(String, String)> {
        match self {
            Source::Builtin(n, text) => Ok((format!("configs/{n}.toml"), text.to_string())),
            Source::File(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read preset file {}", p.display()))?;
                Ok((p.display().to_string(), text))
            }
        }
    }

    fn dir(&self) -> Option<PathBuf> {
        match self {
            Source::Builtin(..) => None,
            Source::File(p) => p.parent().map(Path::to_path_buf),
        }
    }
}

/// The merged TOML table of a preset (its bases applied), without `base`.
fn table(source: &Source, chain: &mut Vec<String>) -> Result<toml::Table> {
    let (label, text) = source.read()?;
    if chain.contains(&label) {
        bail!(
            "preset {label}: `base` loops ({} -> {label})",
            chain.join(" -> ")
        );
    }
    chain.push(label.clone());
    let mut own: toml::Table = text
        .parse()
        .with_context(|| format!("preset {label} is not valid TOML"))?;
    let base = match own.remove("base") {
        None => toml::Table::new(),
        Some(toml::Value::String(b)) => {
            let src = Source::find(&b, source.dir().as_deref())
                .with_context(|| format!("preset {label}: base"))?;
            table(&src, chain)?
        }
        Some(other) => bail!("preset {label}: `base` must be a string, not {other}"),
    };
    let mut merged = base;
    merge(&mut merged, own);
    Ok(merged)
}

/// Overlays `over` on `base`: tables merge key by key, except tables with a `kind` (enums), which
/// replace the base's value whole, like every other value.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) if !o.contains_key("kind") => {
                merge(b, o)
            }
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// A config from a merged table.
pub fn from_table(table: toml::Table, label: &str) -> Result<RunConfig> {
    let mut config: RunConfig = toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("preset {label} is not a complete groupwise config"))?;
    // One seed drives everything (`train --seed` sets both too).
    config.data.seed = config.seed;
    config
        .validate()
        .with_context(|| format!("preset {label}"))?;
    Ok(config)
}

/// The merged table of the preset `name` (a built-in name or a path to a `.toml` file).
pub fn preset_table(name: &str) -> Result<toml::Table> {
    let source = Source::find(name, None)?;
    table(&source, &mut Vec::new())
}

/// The preset `name` (a built-in name or a path to a `.toml` file), validated.
pub fn preset(name: &str) -> Result<RunConfig> {
    from_table(preset_table(name)?, name)
}

/// A preset name as one path component: `short/resnet32-e2e` -> `short-resnet32-e2e`, a file by its
/// stem.
pub fn preset_label(preset: &str) -> String {
    if preset.ends_with(".toml") {
        Path::new(preset)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "preset".into())
    } else {
        preset.replace('/', "-")
    }
}

/// The first comment line of a built-in preset: what it is.
pub fn describe(name: &str) -> &'static str {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, text)| text.lines().next())
        .and_then(|l| l.strip_prefix("# "))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_preset_resolves_to_a_valid_config() {
        assert!(names().count() >= 84, "the grid is missing files");
        for name in names() {
            let c = preset(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            // What `groupwise plan --preset NAME` builds: the plan must be valid too.
            c.declared_plan()
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn grid_files_change_only_what_they_name() {
        let base = preset("short").unwrap();
        let g4 = preset("short/resnet32x2-g4-1a").unwrap();
        assert_eq!(g4.widths, [32, 32, 64, 128]);
        assert_eq!((g4.plan.to_string().as_str(), g4.groups), ("1A", 4));
        assert_eq!(g4.aux_input, groupwise::plan::AuxInput::Isolated);
        assert_eq!(g4.loss.diversity_weight, 0.0);
        // [loss] merged key by key: the temperature stays the base's.
        assert_eq!(g4.loss.temperature, base.loss.temperature);
        assert_eq!(
            (g4.lr, g4.epochs, g4.data.clone()),
            (base.lr, base.epochs, base.data)
        );
        // [schedule] has a kind: short replaces paper's cosine whole.
        assert!(matches!(
            base.schedule,
            groupwise::schedule::Schedule::Step { .. }
        ));
    }

    #[test]
    fn unknown_keys_names_and_loops_are_clear_errors() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "base = \"short\"\nepochz = 3\n").unwrap();
        let e = format!("{:#}", preset(typo.to_str().unwrap()).unwrap_err());
        assert!(e.contains("epochz"), "{e}");
        let a = dir.join("a.toml");
        std::fs::write(&a, "base = \"b.toml\"\n").unwrap();
        std::fs::write(dir.join("b.toml"), "base = \"a.toml\"\n").unwrap();
        let e = format!("{:#}", preset(a.to_str().unwrap()).unwrap_err());
        assert!(e.contains("loops"), "{e}");
        let e = format!("{:#}", preset("short/resnet32-g3-k4").unwrap_err());
        assert!(e.contains("unknown preset"), "{e}");
    }
}
