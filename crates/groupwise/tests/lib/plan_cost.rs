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

/// InfoPro's decoder, counted by hand (ptflops conventions) for 16 channels at 8x8 decoded to a
/// 3x32x32 image: upsampling 16*32*32, conv3x3 16->12 with bias, BN, ReLU, conv3x3 12->3 with bias.
#[test]
fn infopro_decoder_cost_by_hand_and_in_the_units() {
    let d = groupwise::plan::cost::decoder_cost(16, 12, 3, 32);
    let px = 32 * 32;
    let macs = 16 * px + (9 * 16 * 12 + 12) * px + 2 * 12 * px + 12 * px + (9 * 12 * 3 + 3) * px;
    assert_eq!(d.macs, macs as u64);
    assert_eq!(d.params, (9 * 16 * 12 + 12) + 2 * 12 + (9 * 12 * 3 + 3));
    // Every unit carries its decoder; inference does not.
    let arch = Arch::resnet32(3, 32, 10);
    let plain = Plan::new(arch.clone(), "4", 1, AuxInput::StopGradient).unwrap();
    let info = plain.clone().with_decoder(Some(12));
    for k in 0..plain.boundary_count() {
        let (cin, _) = plain.aux_shape(k);
        let extra = groupwise::plan::cost::decoder_cost(cin, 12, 3, 32);
        assert_eq!(info.aux_cost(k), plain.aux_cost(k) + extra);
    }
    assert_eq!(info.inference_macs(), plain.inference_macs());
    assert!(info.total_params() > plain.total_params());
}
