//! Runs that differ only in their seed, as one configuration: seed groups and the spread of a
//! measure over a group's runs.

use groupwise::train::RunConfig;

use super::runs::Row;

/// Runs that differ only in their seeds (weights, data order, augmentation): one configuration
/// measured several times, reported as a mean, a spread and a range.
pub struct SeedGroup {
    /// The members' common name: the first member's with its `_seed=N` part taken out.
    pub name: String,
    /// Indices of the member runs, in report order.
    pub members: Vec<usize>,
}

/// Mean, sample standard deviation (NaN for fewer than two values), minimum and maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// Of the finite values; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        Some(Spread {
            mean,
            std,
            min: v.iter().cloned().fold(f64::INFINITY, f64::min),
            max: v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            n,
        })
    }
}

/// The rows of `rows`, grouped by config with the seeds left out; groups in order of first
/// appearance.
pub fn seed_groups(rows: &[Row]) -> Vec<SeedGroup> {
    let seedless = |c: &RunConfig| RunConfig {
        seed: 0,
        data: groupwise::data::DataSpec {
            seed: 0,
            ..c.data.clone()
        },
        ..c.clone()
    };
    let mut keyed: Vec<(RunConfig, SeedGroup)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let key = seedless(&r.config);
        match keyed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.members.push(i),
            None => {
                let name = r
                    .name
                    .split('_')
                    .filter(|part| !part.starts_with("seed="))
                    .collect::<Vec<_>>()
                    .join("_");
                keyed.push((
                    key,
                    SeedGroup {
                        name: if name.is_empty() { r.method() } else { name },
                        members: vec![i],
                    },
                ))
            }
        }
    }
    keyed.into_iter().map(|(_, g)| g).collect()
}

impl SeedGroup {
    /// The members that count in its numbers: the finished ones with a test accuracy, or, while
    /// none has finished, every one with a test accuracy.
    pub(super) fn counted<'a>(&self, rows: &'a [Row]) -> Vec<&'a Row> {
        let with_test = || {
            self.members
                .iter()
                .map(|&i| &rows[i])
                .filter(|r| r.head.is_finite())
        };
        let finished: Vec<&Row> = with_test().filter(|r| r.finished).collect();
        if finished.is_empty() {
            with_test().collect()
        } else {
            finished
        }
    }

    /// Spread of `f` over the counted members.
    pub(super) fn spread(&self, rows: &[Row], f: impl Fn(&Row) -> f64) -> Option<Spread> {
        Spread::of(self.counted(rows).into_iter().map(f))
    }
}
