//! `groupwise plan`: the K x G partition of a config, node by node, with its costs; with `--profile`,
//! every node's step timed on this machine; with `--simulate`, the step predicted on N workers.

use std::io::Write;

use anyhow::{bail, Result};

use groupwise::local::Network;
use groupwise::parallel::{self, check_threads, NodeProfile, ProfileSettings, Topology};
use groupwise::plan::cost::NodeKind;
use groupwise::plan::{Plan, PlanSpec};
use groupwise::train::RunConfig;

use crate::args::PlanArgs;
use crate::config::base_config;
use crate::profile_file::ProfileFile;
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
    if args.cores.is_some() && args.simulate.is_none() && args.search.is_none() {
        bail!("--cores is for --simulate and --search (the cores the simulated workers share)");
    }
    if args.profile {
        return profile(&c, &plan, &args);
    }
    if let Some(dir) = &args.search {
        return super::search::run(&plan, &args, dir);
    }
    if let Some(path) = &args.simulate {
        return super::simulate::run(&plan, &c.plan.method(plan.groups), &args, path);
    }
    print_plan(&c, &plan, args.json)
}

/// `--profile`: every node's step timed here, then (unless `--no-reference`) the end-to-end network
/// of the same architecture, in the same run.
fn profile(c: &RunConfig, plan: &Plan, args: &PlanArgs) -> Result<()> {
    check_threads("--threads", args.threads, 1).map_err(anyhow::Error::msg)?;
    if args.batch < 1 || args.steps < 1 {
        bail!("--batch and --steps must be at least 1");
    }
    let device = groupwise::device::resolve(c.device)?;
    let settings = ProfileSettings {
        batch: args.batch,
        warmup: args.warmup,
        steps: args.steps,
        threads: args.threads,
    };
    if args.copies == 0 {
        bail!("--copies must be at least 1");
    }
    // Every copy on a thread of its own, all at once; each node's mean over the copies.
    let time = |plan: &Plan| -> Result<Vec<NodeProfile>> {
        tch::manual_seed(c.seed as i64);
        let copies: Vec<Vec<NodeProfile>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..args.copies)
                .map(|_| {
                    scope.spawn(|| {
                        let net = Network::new(plan, c.loss, c.sgd, device);
                        parallel::profile(net, device, settings).map(|(_, p)| p)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(r) => r.map_err(anyhow::Error::from),
                    Err(_) => Err(anyhow::anyhow!("a profiling thread panicked")),
                })
                .collect::<Result<_>>()
        })?;
        Ok((0..copies[0].len())
            .filter_map(|i| {
                let node: Vec<NodeProfile> = copies.iter().map(|c| c[i].clone()).collect();
                NodeProfile::mean(&node)
            })
            .collect())
    };
    eprintln!(
        "profiling {} nodes: {} warm-up + {} timed steps of batch {}, {} intra-op thread(s), {} \
         cop{} at once ...",
        Topology::new(plan).len(),
        args.warmup,
        args.steps,
        args.batch,
        args.threads,
        args.copies,
        if args.copies == 1 { "y" } else { "ies" }
    );
    let nodes = time(plan)?;
    let reference = if args.no_reference {
        None
    } else {
        eprintln!("profiling the end-to-end reference ...");
        let e2e = Plan::from_spec(plan.arch.clone(), &PlanSpec::EndToEnd, 1, plan.aux_input)?;
        time(&e2e)?.into_iter().last()
    };
    let file = ProfileFile {
        plan: c.plan.to_string(),
        groups: plan.groups,
        aux_input: Some(plan.aux_input),
        batch: args.batch,
        threads: args.threads,
        steps: args.steps,
        copies: args.copies,
        nodes,
        reference,
    };
    let mut out = stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&file)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{}, batch {}, {} intra-op thread(s), {} cop{} at once, mean of {} steps after {} warm-up; \
         GMAC/s counts 3 x forward MACs (forward, input and weight gradients); warm ms: what the \
         warm-up steps took beyond as many timed ones (a run's first-use costs)",
        c.plan.method(plan.groups),
        args.batch,
        args.threads,
        args.copies,
        if args.copies == 1 { "y" } else { "ies" },
        args.steps,
        args.warmup
    )?;
    writeln!(
        out,
        "{:<8} {:>11} {:>10} {:>9} {:>9} {:>9} {:>6} {:>8} {:>7} {:>8}",
        "node",
        "fwd MACs",
        "ms/step",
        "fwd ms",
        "bwd ms",
        "upd ms",
        "cpu%",
        "GMAC/s",
        "vs e2e",
        "warm ms"
    )?;
    let e2e = file.reference.as_ref().map(|r| r.gmacs_per_second);
    let row = |out: &mut crate::stdout::Stdout, name: String, n: &NodeProfile| {
        writeln!(
            out,
            "{:<8} {:>11.3e} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>6.0} {:>8.2} {:>7} {:>8.1}",
            name,
            n.macs as f64,
            n.seconds_per_step * 1e3,
            n.forward_seconds * 1e3,
            n.backward_seconds * 1e3,
            n.update_seconds * 1e3,
            100.0 * n.cpu_seconds / n.seconds_per_step.max(1e-12),
            n.gmacs_per_second,
            e2e.map_or("-".into(), |e| format!("{:.2}", n.gmacs_per_second / e)),
            n.warmup_seconds * 1e3
        )
    };
    for n in &file.nodes {
        row(&mut out, n.node.to_string(), n)?;
    }
    let total: f64 = file.nodes.iter().map(|n| n.seconds_per_step).sum();
    writeln!(out, "sum of nodes: {:.2} ms/step", total * 1e3)?;
    if let Some(r) = &file.reference {
        row(&mut out, "e2e".into(), r)?;
        writeln!(
            out,
            "sum of nodes / end-to-end step: {:.2}",
            total / r.seconds_per_step
        )?;
    }
    Ok(())
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
