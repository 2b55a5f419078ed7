//! `groupwise plan`: the K x G partition of a config, node by node, with its costs.

use std::io::Write;

use anyhow::Result;

use groupwise::plan::cost::NodeKind;
use groupwise::plan::Plan;
use groupwise::train::RunConfig;

use crate::args::PlanArgs;
use crate::config::base_config;
use crate::stdout::stdout;

/// Builds the plan of the preset with the flags on top and prints it.
pub fn run(args: PlanArgs) -> Result<()> {
    let mut c = base_config(args.preset.as_deref())?;
    args.model.apply(&mut c)?;
    let (channels, size, classes) = c.data.shape();
    let arch = c.arch(
        args.in_channels.unwrap_or(channels as i64) as usize,
        args.image_size.unwrap_or(size as i64) as usize,
        args.classes.unwrap_or(classes as i64) as usize,
    );
    let plan = c.build_plan(arch)?;
    print_plan(&c, &plan, args.json)
}

fn print_plan(c: &RunConfig, plan: &Plan, json: bool) -> Result<()> {
    let mut out = stdout();
    let nodes = plan.nodes();
    if json {
        let value = serde_json::json!({
            "plan": plan,
            "boundaries": plan.boundary_names(),
            "nodes": nodes,
            "max_node_macs": plan.figure_max_node_macs(),
            "inference_macs": plan.inference_macs(),
            "params": plan.total_params(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let a = &plan.arch;
    writeln!(
        out,"ResNet-{} widths {:?}, input {}x{}x{}, {} classes; plan {} -> boundaries {:?}; G={}; aux input {:?}",
        a.depth(),
        a.widths,
        a.in_channels,
        a.image_size,
        a.image_size,
        a.classes,
        c.plan,
        plan.boundary_names(),
        plan.groups,
        plan.aux_input
    )?;
    writeln!(
        out,
        "{:<14} {:>12} {:>12} {:>12} {:>10}  layers",
        "node", "trunk MACs", "clf MACs", "total MACs", "params"
    )?;
    for n in &nodes {
        let name = match n.kind {
            NodeKind::Unit { module, group } => format!("unit {module}.{group}"),
            NodeKind::TailColumn { group } => format!("tail {group}"),
            NodeKind::Head => "head".into(),
        };
        let layers: Vec<String> = n
            .layers
            .iter()
            .map(|&(s, b)| {
                if s == 0 {
                    "stem".into()
                } else {
                    format!("{s}.{b}")
                }
            })
            .collect();
        writeln!(
            out,
            "{:<14} {:>12.4e} {:>12.4e} {:>12.4e} {:>10}  {}",
            name,
            n.trunk.macs as f64,
            n.classifier.macs as f64,
            n.total().macs as f64,
            n.total().params,
            layers.join(" ")
        )?;
    }
    writeln!(
        out,"max node (paper's figure conventions): {:.4e} MACs; inference: {:.4e} MACs; parameters: {}",
        plan.figure_max_node_macs() as f64,
        plan.inference_macs() as f64,
        plan.total_params()
    )?;
    Ok(())
}
