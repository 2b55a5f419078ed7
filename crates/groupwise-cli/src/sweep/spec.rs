//! What a sweep runs: presets (globs expanded) x grid, with values set on every run, from the flags
//! and a sweep file; each run named after its preset and grid values, its config resolved and its
//! plan checked before anything starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use groupwise::train::RunConfig;

use crate::args::SweepArgs;
use crate::presets;

/// One configuration of the sweep.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// Directory name under the sweep's `out`.
    pub name: String,
    /// Its resolved config.
    pub config: RunConfig,
}

/// A TOML value from a command-line text: TOML syntax when it parses (numbers, booleans, arrays),
/// else the text as a string; a string anyway where the config holds a string (`plan = 4` means "4").
fn parse_value(text: &str, current: Option<&toml::Value>) -> toml::Value {
    if matches!(current, Some(toml::Value::String(_))) {
        return toml::Value::String(text.to_string());
    }
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn get_path<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for p in parts {
        value = value.as_table()?.get(p)?;
    }
    Some(value)
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut t = table;
    for p in &parts[..parts.len() - 1] {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("{key}: {p} is not a table"))?;
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// A run-directory name: the preset with `/` as `-`, then `_key=value` for every grid axis.
fn run_name(preset: &str, axes: &[(String, String)]) -> String {
    let mut name = presets::preset_label(preset);
    for (k, v) in axes {
        name.push_str(&format!("_{k}={v}"));
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=.,".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `*` matches any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The presets named by `patterns`, globs expanded in file order.
fn expand_presets(patterns: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        if p.contains('*') {
            let hits: Vec<String> = presets::names()
                .filter(|n| glob_match(p, n))
                .map(String::from)
                .collect();
            if hits.is_empty() {
                bail!("'{p}' matches no preset (`groupwise presets` lists them)");
            }
            out.extend(hits);
        } else {
            out.push(p.clone());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

/// What a sweep runs: presets, values set on every run, grid axes (key, values as text).
#[derive(Debug, Default)]
pub struct SweepSpec {
    /// Preset names or files (globs allowed).
    pub presets: Vec<String>,
    /// `(key, value)` set on every run.
    pub set: Vec<(String, String)>,
    /// `(key, values)` axes of the grid.
    pub grid: Vec<(String, Vec<String>)>,
}

fn split_kv(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => bail!("{flag} {s}: expected KEY=VALUE"),
    }
}

/// A TOML value as the text `--set`/`--grid` would take.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SweepSpec {
    /// From the flags and an optional sweep file; returns the spec and the file's `out`.
    pub(super) fn from_args(args: &SweepArgs) -> Result<(SweepSpec, Option<PathBuf>)> {
        let mut spec = SweepSpec::default();
        let mut out = None;
        if let Some(path) = &args.file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read sweep file {}", path.display()))?;
            let mut t: toml::Table = text
                .parse()
                .with_context(|| format!("sweep file {} is not valid TOML", path.display()))?;
            let ctx = |what: &str| format!("sweep file {}: {what}", path.display());
            if let Some(p) = t.remove("presets") {
                let list = p
                    .as_array()
                    .with_context(|| ctx("presets must be a list"))?;
                for v in list {
                    let name = v.as_str().with_context(|| ctx("presets are strings"))?;
                    // Preset files in a sweep file are relative to it.
                    spec.presets.push(if name.ends_with(".toml") {
                        let dir = path.parent().unwrap_or(Path::new("."));
                        dir.join(name).display().to_string()
                    } else {
                        name.to_string()
                    });
                }
            }
            if let Some(o) = t.remove("out") {
                out = Some(PathBuf::from(
                    o.as_str().with_context(|| ctx("out must be a string"))?,
                ));
            }
            if let Some(s) = t.remove("set") {
                let s = s.as_table().with_context(|| ctx("[set] must be a table"))?;
                flatten(s, "", &mut |k, v| spec.set.push((k, value_text(v))));
            }
            if let Some(g) = t.remove("grid") {
                let g = g
                    .as_table()
                    .with_context(|| ctx("[grid] must be a table"))?;
                let mut axes = Vec::new();
                flatten(g, "", &mut |k, v| axes.push((k, v.clone())));
                for (k, v) in axes {
                    let values = v
                        .as_array()
                        .with_context(|| ctx(&format!("grid.{k} must be a list of values")))?;
                    spec.grid
                        .push((k, values.iter().map(value_text).collect::<Vec<_>>()));
                }
            }
            if let Some(k) = t.keys().next() {
                bail!(ctx(&format!(
                    "unknown key '{k}' (presets, out, [set], [grid])"
                )));
            }
        }
        spec.presets.extend(args.presets.iter().cloned());
        for s in &args.set {
            spec.set.push(split_kv(s, "--set")?);
        }
        for g in &args.grid {
            let (k, v) = split_kv(g, "--grid")?;
            spec.grid
                .push((k, v.split(',').map(|s| s.trim().to_string()).collect()));
        }
        if spec.presets.is_empty() {
            bail!("no presets to run: name some (`groupwise presets` lists them) or pass --file");
        }
        Ok((spec, out))
    }

    /// Every run of the sweep, in order: presets outermost, then the grid axes in order.
    pub fn runs(&self) -> Result<Vec<PlannedRun>> {
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (key, values) in &self.grid {
            if values.is_empty() || values.iter().any(String::is_empty) {
                bail!("grid axis {key} has an empty value");
            }
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((key.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let mut out = Vec::new();
        let mut names = BTreeMap::new();
        for preset in expand_presets(&self.presets)? {
            for combo in &combos {
                let mut table = presets::preset_table(&preset)?;
                for (k, v) in self.set.iter().chain(combo) {
                    let value = parse_value(v, get_path(&table, k));
                    set_path(&mut table, k, value)?;
                }
                let name = run_name(&preset, combo);
                let config = presets::from_table(table, &name)?
                    .with_absolute_paths()
                    .with_context(|| format!("run {name}"))?;
                config
                    .declared_plan()
                    .with_context(|| format!("run {name}"))?;
                if let Some(other) = names.insert(name.clone(), preset.clone()) {
                    bail!("runs of {other} and {preset} would share the directory name {name}");
                }
                out.push(PlannedRun { name, config });
            }
        }
        Ok(out)
    }
}

fn flatten(t: &toml::Table, prefix: &str, f: &mut dyn FnMut(String, &toml::Value)) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) if !inner.contains_key("kind") => flatten(inner, &key, f),
            other => f(key, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::RuntimeArgs;

    fn spec(presets: &[&str], set: &[(&str, &str)], grid: &[(&str, &[&str])]) -> SweepSpec {
        SweepSpec {
            presets: presets.iter().map(|s| s.to_string()).collect(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            grid: grid
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
                .collect(),
        }
    }

    #[test]
    fn grid_is_the_product_and_values_take_the_config_types() {
        let runs = spec(
            &["smoke"],
            &[("epochs", "2"), ("data.synthetic.train", "128")],
            &[("plan", &["1", "2"]), ("groups", &["1", "2"])],
        )
        .runs()
        .unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "smoke_plan=1_groups=1",
                "smoke_plan=1_groups=2",
                "smoke_plan=2_groups=1",
                "smoke_plan=2_groups=2"
            ]
        );
        assert_eq!(runs[3].config.plan.to_string(), "2"); // a string where the config holds one
        assert_eq!(runs[3].config.groups, 2);
        assert!(runs.iter().all(|r| r.config.epochs == 2));
        assert!(runs.iter().all(|r| r.config.data.synthetic.train == 128));
    }

    #[test]
    fn globs_expand_in_file_order_and_bad_keys_are_errors() {
        let runs = spec(&["short/resnet32-g*-k4"], &[], &[]).runs().unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "short-resnet32-g2-k4",
                "short-resnet32-g4-k4",
                "short-resnet32-g8-k4"
            ]
        );
        let e = spec(&["smoke"], &[("epochz", "2")], &[])
            .runs()
            .unwrap_err();
        assert!(format!("{e:#}").contains("epochz"), "{e:#}");
        // Impossible plans are found before anything runs.
        let e = spec(&["smoke"], &[("groups", "3")], &[])
            .runs()
            .unwrap_err();
        assert!(format!("{e:#}").contains("smoke"), "{e:#}");
        assert!(spec(&["smoke"], &[("epochs", "0")], &[]).runs().is_err());
        assert!(spec(&["nope/*"], &[], &[]).runs().is_err());
    }

    #[test]
    fn sweep_files_give_presets_set_and_grid() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let f = dir.join("s.toml");
        std::fs::write(
            &f,
            "presets = [\"smoke\"]\nout = \"x\"\n[set]\nepochs = 2\n[set.data]\ntrain_subset = 100\n\
             [grid]\nseed = [1, 2]\n",
        )
        .unwrap();
        let args = SweepArgs {
            presets: vec![],
            file: Some(f.clone()),
            grid: vec![],
            set: vec!["lr=0.01".into()],
            out: None,
            jobs: 1,
            dry_run: true,
            no_report: true,
            runtime: RuntimeArgs::default(),
        };
        let (s, out) = SweepSpec::from_args(&args).unwrap();
        assert_eq!(out, Some(PathBuf::from("x")));
        let runs = s.runs().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].name, "smoke_seed=2");
        assert_eq!(
            (
                runs[1].config.epochs,
                runs[1].config.seed,
                runs[1].config.lr
            ),
            (2, 2, 0.01)
        );
        assert_eq!(runs[0].config.data.train_subset, Some(100));
        std::fs::write(&f, "presets = [\"smoke\"]\nepochs = 2\n").unwrap();
        let e = SweepSpec::from_args(&args).unwrap_err();
        assert!(format!("{e:#}").contains("unknown key 'epochs'"), "{e:#}");
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("a*c", "abc"));
        assert!(glob_match("a*", "a"));
        assert!(glob_match("*-k4", "short/resnet32-g2-k4"));
        assert!(!glob_match("*-k4", "short/resnet32-g2-k16"));
        assert!(glob_match("s*/*-g*-k4", "short/resnet32-g2-k4"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
