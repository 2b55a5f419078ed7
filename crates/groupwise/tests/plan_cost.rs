//! `groupwise plan` reproduces METHOD.md section 8's ResNet-32 table within 1% in every cell.

use groupwise::model::Arch;
use groupwise::plan::{AuxInput, Plan};

#[test]
fn resnet32_node_macs_match_the_paper_table() {
    let arch = Arch::resnet32(3, 32, 10);
    let table: &[(i64, &str, f64)] = &[
        (1, "1", 7.01e7),
        (1, "2", 3.70e7),
        (1, "4", 1.94e7),
        (1, "8", 1.09e7),
        (1, "16", 6.04e6),
        (2, "1", 1.91e7),
        (2, "2", 1.11e7),
        (2, "4", 6.57e6),
        (2, "8", 4.27e6),
        (2, "16", 3.04e6),
        (4, "1", 5.84e6),
        (4, "2", 4.01e6),
        (4, "4", 2.85e6),
        (4, "8", 2.30e6),
        (8, "1", 2.45e6),
        (8, "2", 2.07e6),
        (8, "4", 1.78e6),
    ];
    let mut worst = 0.0f64;
    for &(g, k, expected) in table {
        let plan = Plan::new(arch.clone(), k, g, AuxInput::StopGradient).unwrap();
        let got = plan.figure_max_node_macs() as f64;
        let rel = (got - expected).abs() / expected;
        println!(
            "G={g} K={k}: {got:.4e} vs {expected:.2e} ({:+.2}%)",
            100.0 * (got - expected) / expected
        );
        worst = worst.max(rel);
    }
    assert!(worst < 0.01, "worst relative error {worst}");
}
