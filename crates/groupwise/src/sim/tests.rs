use super::*;
use crate::local::Phase;
use crate::model::Arch;
use crate::parallel::{Channel, Kind};
use crate::plan::{AuxInput, Plan};

fn topo(k: &str, g: i64) -> Topology {
    Topology::new(&Plan::new(Arch::resnet32(3, 32, 10), k, g, AuxInput::StopGradient).unwrap())
}

fn trunk(seconds: f64) -> NodeCost {
    NodeCost {
        trunk: seconds,
        ..NodeCost::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

/// Setup with the given workers (each a list of node ids, in its own process when `processes`).
fn setup(topo: Topology, costs: Vec<NodeCost>, workers: Vec<Vec<usize>>, processes: bool) -> Setup {
    let n = workers.len();
    Setup {
        process: if processes {
            (0..n).collect()
        } else {
            vec![0; n]
        },
        speed: vec![1.0; n],
        workers,
        link: Link::IN_PROCESS,
        ..Setup::new(topo, costs, 1, 1, Link::IN_PROCESS)
    }
}

#[test]
fn a_two_stage_pipeline_fills_once_then_runs_at_its_stage_time() {
    // DGL K=2: m0.g0, m1.g0, head. Two workers: m0.g0 | m1.g0 + head, one second each.
    let t = topo("2", 1);
    assert_eq!(t.len(), 3);
    let costs = vec![trunk(1.0), trunk(0.75), trunk(0.25)];
    let mut s = setup(t, costs, vec![vec![0], vec![1, 2]], false);
    s.steps = 10;
    let p = simulate(&s).unwrap();
    // Step s of m1 starts when m0 sends it (time s) and ends a second later.
    assert!(close(p.segment_seconds, 11.0), "{}", p.segment_seconds);
    assert!(
        close(p.steady_step_seconds, 1.0),
        "{}",
        p.steady_step_seconds
    );
    assert!(close(p.step_seconds, 1.1));
    assert!(close(p.workers[0].busy, 10.0) && close(p.workers[1].busy, 10.0));
    // One worker: the sequential schedule, no waiting.
    let one = Setup::new(s.topo.clone(), s.costs.clone(), 1, 1, Link::IN_PROCESS);
    let p1 = simulate(&Setup { steps: 10, ..one }).unwrap();
    assert!(close(p1.segment_seconds, 20.0), "{}", p1.segment_seconds);
    assert!(close(p1.workers[0].wait, 0.0));
}

#[test]
fn a_cold_segment_pays_each_nodes_warm_up_once() {
    // The two-stage pipeline above; m0.g0's first steps take 2 s more, m1.g0's 0.5 s.
    let t = topo("2", 1);
    let mut costs = vec![trunk(1.0), trunk(0.75), trunk(0.25)];
    costs[0].warmup = 2.0;
    costs[1].warmup = 0.5;
    let mut s = setup(t, costs, vec![vec![0], vec![1, 2]], false);
    s.steps = 10;
    // Warm (a later epoch): as if the warm-up were not there.
    assert!(close(simulate(&s).unwrap().segment_seconds, 11.0));
    // Cold: m0.g0's first step ends at 3 s, then one a second; worker 1's first step (m1.g0 1.25 s,
    // the head 0.25 s) ends at 4.5 s, and it stays half a second behind: 3 + 9 + 1.5.
    s.cold = true;
    let p = simulate(&s).unwrap();
    assert!(close(p.segment_seconds, 13.5), "{}", p.segment_seconds);
    assert!(close(p.steady_step_seconds, 1.0));
    // One worker: the sum, plus every warm-up once.
    let one = Setup::new(s.topo.clone(), s.costs.clone(), 1, 1, Link::IN_PROCESS);
    let p1 = simulate(&Setup {
        steps: 10,
        cold: true,
        ..one
    })
    .unwrap();
    assert!(close(p1.segment_seconds, 22.5), "{}", p1.segment_seconds);
}

#[test]
fn a_bottleneck_node_sets_the_pace_and_back_pressure_bounds_the_queue() {
    let t = topo("2", 1);
    let costs = vec![trunk(1.0), trunk(3.0), trunk(1.0)];
    let mut s = setup(t, costs, vec![vec![0], vec![1], vec![2]], false);
    s.steps = 12;
    s.depth = 2;
    let p = simulate(&s).unwrap();
    // m1.g0 starts step s at 1 + 3 (s - 1); the head ends it 4 seconds later.
    assert!(
        close(p.segment_seconds, 3.0 * 12.0 + 2.0),
        "{}",
        p.segment_seconds
    );
    assert!(close(p.steady_step_seconds, 3.0));
    assert_eq!(p.critical_node, 1);
    // m0.g0 runs ahead by at most `depth` batches: the feeder hands step s to the workers in order,
    // and its batch s - 1 for the head waits for room until the head takes batch s - 3, when it
    // ends step s - 4 (at 2 + 3 (s - 4)); m0.g0's step s then takes a second.
    let m0_end = |step: usize| {
        p.timeline
            .iter()
            .filter(|i| i.node == 0 && i.step == step && i.phase == Phase::Trunk)
            .map(|i| i.end)
            .fold(0.0, f64::max)
    };
    assert!(close(m0_end(12), 2.0 + 3.0 * 8.0 + 1.0), "{}", m0_end(12));
    assert!(close(m0_end(2), 2.0));
}

#[test]
fn a_slow_link_costs_its_sender_and_delays_the_receiver() {
    let t = topo("2", 1);
    let bytes = t.message_bytes(Channel::new(0, 1, Kind::Activation), 128);
    // ResNet-32 K=2's first boundary ends stage 2: 32 channels of 16x16, float32.
    assert_eq!(bytes, 4 * 32 * 16 * 16 * 128);
    let costs = vec![trunk(1.0), trunk(0.25), trunk(0.25)];
    let mut s = setup(t, costs, vec![vec![0], vec![1, 2]], true);
    s.link = Link {
        latency: 0.01,
        bandwidth: bytes as f64 / 0.5,
    };
    s.steps = 8;
    let p = simulate(&s).unwrap();
    // m0.g0 sends for half a second after each step: 1.5 s per step; the last step arrives 10 ms
    // after its send and takes half a second more.
    assert!(close(p.steady_step_seconds, 1.5));
    assert!(
        close(p.segment_seconds, 1.5 * 8.0 + 0.01 + 0.5),
        "{}",
        p.segment_seconds
    );
    assert!(close(p.workers[0].comm, 4.0));
    // The same nodes as threads of one process: no link.
    s.process = vec![0, 0];
    assert!(close(simulate(&s).unwrap().segment_seconds, 8.0 + 0.5));
}

#[test]
fn groups_wait_for_their_peers_slices_and_logits() {
    // K=1 G=2 with a separate final module: m0.g0 m0.g1, tails t0 t1, head.
    let t = topo("1:0", 2);
    let n = t.len();
    let mut costs = vec![NodeCost::default(); n];
    costs[0] = NodeCost {
        trunk: 1.0,
        classifier: 0.5,
        backward: 1.0,
        update: 0.0,
        warmup: 0.0,
    };
    costs[1] = NodeCost {
        trunk: 2.0,
        classifier: 0.5,
        backward: 1.0,
        update: 0.0,
        warmup: 0.0,
    };
    let workers: Vec<Vec<usize>> = (0..n).map(|id| vec![id]).collect();
    let mut s = setup(t, costs, workers, false);
    s.steps = 1;
    let p = simulate(&s).unwrap();
    // m0.g0 waits a second for g1's slice (at 2); their logits cross at 2.5; both backward passes
    // end at 3.5.
    let end = |node: usize| {
        p.timeline
            .iter()
            .filter(|i| i.node == node)
            .map(|i| i.end)
            .fold(0.0, f64::max)
    };
    assert!(
        close(end(0), 3.5) && close(end(1), 3.5),
        "{} {}",
        end(0),
        end(1)
    );
    assert!(close(p.workers[0].wait, 1.0), "{}", p.workers[0].wait);
}

#[test]
fn every_plan_and_placement_runs_to_the_end_and_one_worker_is_the_sum() {
    for (k, g) in [("1", 1), ("2", 1), ("4", 2), ("1:0", 4), ("4", 4), ("1", 2)] {
        let t = topo(k, g);
        let costs: Vec<NodeCost> = (0..t.len())
            .map(|id| NodeCost {
                trunk: 0.1 + (id % 3) as f64 * 0.05,
                classifier: 0.02,
                backward: 0.2,
                update: 0.01,
                warmup: 0.0,
            })
            .collect();
        let total: f64 = costs.iter().map(NodeCost::total).sum();
        for workers in [1, 2, 3, 5, 64] {
            for in_process in [true, false] {
                let (p, w) = if in_process {
                    (1, workers)
                } else {
                    (workers, 1)
                };
                let s = Setup {
                    depth: 1 + workers % 3,
                    link: Link::parse("20,1").unwrap(),
                    ..Setup::new(t.clone(), costs.clone(), p, w, Link::IN_PROCESS)
                };
                let pred = simulate(&s).unwrap_or_else(|e| panic!("{k}:{g} x{workers}: {e}"));
                // Workers in one process never do worse than one worker (messages cost nothing).
                if in_process {
                    assert!(
                        pred.steady_step_seconds <= total + 1e-9,
                        "{k}:{g} x{workers}"
                    );
                }
                if workers == 1 {
                    let want = total * s.steps as f64;
                    let got = pred.segment_seconds;
                    assert!(close(got, want), "{k}:{g} {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn links_parse_with_clear_errors() {
    let l = Link::parse("50,1.25").unwrap();
    assert!(close(l.latency, 50e-6) && close(l.bandwidth, 1.25e9));
    for bad in ["", "50", "a,1", "50,0", "-1,1", "50,-2"] {
        let e = Link::parse(bad).unwrap_err();
        assert!(e.contains("LATENCY_US,GBYTES_PER_S"), "{e}");
    }
}

#[test]
fn workers_beyond_the_cores_share_them_fairly() {
    // DGL K=2, a node per worker, a second each: alone, a step a second once the pipeline is full.
    let t = topo("2", 1);
    let costs = vec![trunk(1.0), trunk(1.0), trunk(1.0)];
    let mut s = setup(t, costs, vec![vec![0], vec![1], vec![2]], false);
    s.steps = 40;
    // The pace mid-segment (the drain, with fewer workers busy, runs faster).
    let steady = |s: &Setup| {
        let e = simulate(s).unwrap().step_ends;
        e[21] - e[20]
    };
    assert!(close(steady(&s), 1.0));
    // As many cores as workers: the same.
    s.cores = Some(3);
    assert!(close(steady(&s), 1.0));
    // Two cores: the three stages share them, 1.5 s each per step; one core: the sum.
    s.cores = Some(2);
    assert!(close(steady(&s), 1.5), "{}", steady(&s));
    s.cores = Some(1);
    assert!(close(steady(&s), 3.0), "{}", steady(&s));
    // Workers of two intra-op threads each on two cores: one at a time.
    s.cores = Some(2);
    s.threads_per_worker = 2;
    assert!(close(steady(&s), 3.0), "{}", steady(&s));
    // One step never overlaps itself: the first step runs alone, node after node, on one core.
    s.steps = 1;
    s.cores = Some(1);
    s.threads_per_worker = 1;
    let p = simulate(&s).unwrap();
    assert!(close(p.segment_seconds, 3.0), "{}", p.segment_seconds);
    // A stretched compute is drawn as it ran: m1.g0's step 2 of 2 shares its core with the head's
    // step 1 for a while, so it spans more than its second.
    s.steps = 2;
    s.cores = Some(1);
    let p = simulate(&s).unwrap();
    let m1 = p
        .timeline
        .iter()
        .find(|i| i.node == 1 && i.step == 2)
        .unwrap();
    assert!(m1.end - m1.start > 1.0 + 1e-9, "{m1:?}");
    // Work is conserved on one core: 2 steps x 3 seconds.
    assert!(close(p.segment_seconds, 6.0), "{}", p.segment_seconds);
}
