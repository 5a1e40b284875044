//! The fate of each packet under a [`FaultSpec`]: lost or kept, duplicated, corrupted, how long it is held.
//!
//! The decisions follow netem's order (duplication, loss, corruption, reordering, delay) and are drawn from a
//! ChaCha generator seeded by the spec, so the same seed and the same packet sequence give the same fates.
//! The rate limit depends on time and is applied by the engine on top of the delay drawn here.

use crate::spec::{Distribution, FaultSpec, Loss};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// What happens to one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    /// The packet is dropped (and not duplicated).
    pub drop: bool,
    /// A second copy is sent along with the packet.
    pub duplicate: bool,
    /// Index of the bit flipped, counted from the first bit of the IP packet.
    pub corrupt_bit: Option<usize>,
    /// How long the packet is held before it is let go (zero for a reordered packet).
    pub delay: Duration,
}

/// The random state of a fault: generator and Gilbert-Elliott chain.
pub struct Model {
    spec: FaultSpec,
    rng: ChaCha8Rng,
    ge_bad: bool,
}

impl Model {
    /// A model for `spec`, seeded by `spec.seed` or, without one, by the clock.
    pub fn new(spec: &FaultSpec) -> Model {
        let seed = spec.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        });
        Model {
            spec: spec.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            ge_bad: false,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen::<f64>() < p
    }

    fn lost(&mut self) -> bool {
        match self.spec.loss {
            None => false,
            Some(Loss::Random(p)) => self.chance(p),
            Some(Loss::GilbertElliott(ge)) => {
                // As netem's loss_gilb_ell: the transition is drawn first, then the loss of the state the
                // chain was in when the packet arrived.
                if self.ge_bad {
                    if self.chance(ge.r) {
                        self.ge_bad = false;
                    }
                    self.chance(ge.loss_bad)
                } else {
                    if self.chance(ge.p) {
                        self.ge_bad = true;
                    }
                    self.chance(ge.loss_good)
                }
            }
        }
    }

    fn standard_normal(&mut self) -> f64 {
        let u1: f64 = 1.0 - self.rng.gen::<f64>(); // (0, 1]
        let u2: f64 = self.rng.gen();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn pareto(&mut self) -> f64 {
        // Shape 3, like iproute2's table: x = u^(-1/3) in [1, 16] (the table's resolution bounds its tail),
        // shifted by the mean 1.5 and scaled by 4/3.
        let u: f64 = self.rng.gen_range(1.0 / 4096.0..=1.0);
        (u.powf(-1.0 / 3.0) - 1.5) * (4.0 / 3.0)
    }

    fn jitter_factor(&mut self) -> f64 {
        match self.spec.distribution {
            Distribution::Uniform => self.rng.gen_range(-1.0..=1.0),
            Distribution::Normal => self.standard_normal(),
            Distribution::Pareto => self.pareto(),
            Distribution::Paretonormal => 0.25 * self.standard_normal() + 0.75 * self.pareto(),
        }
    }

    /// The fate of the next packet, an IP packet of `packet` bytes.
    pub fn decide(&mut self, packet: &[u8]) -> Fate {
        let duplicate = self.chance(self.spec.duplicate);
        let lost = self.lost();
        if lost && !duplicate {
            return Fate {
                drop: true,
                duplicate: false,
                corrupt_bit: None,
                delay: Duration::ZERO,
            };
        }
        // A lost duplicated packet still goes out once, as in netem.
        let duplicate = duplicate && !lost;
        let corrupt_bit = if self.chance(self.spec.corrupt) {
            let header = packet
                .first()
                .map(|b| usize::from(b & 0x0f) * 4)
                .unwrap_or(0);
            (packet.len() > header).then(|| self.rng.gen_range(header * 8..packet.len() * 8))
        } else {
            None
        };
        let mut delay = Duration::ZERO;
        if self.spec.delay_ms > 0.0 || self.spec.jitter_ms > 0.0 {
            let reordered = self.chance(self.spec.reorder);
            if !reordered {
                let t = if self.spec.jitter_ms > 0.0 {
                    self.jitter_factor()
                } else {
                    0.0
                };
                let ms = (self.spec.delay_ms + self.spec.jitter_ms * t).max(0.0);
                delay = Duration::from_secs_f64(ms / 1000.0);
            }
        }
        Fate {
            drop: false,
            duplicate,
            corrupt_bit,
            delay,
        }
    }
}

/// Flip bit `bit` of `packet` (bit 0 is the most significant bit of the first byte).
pub fn flip_bit(packet: &mut [u8], bit: usize) {
    packet[bit / 8] ^= 0x80 >> (bit % 8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GilbertElliott;

    fn packets(spec: &FaultSpec, n: usize) -> Vec<Fate> {
        let mut m = Model::new(spec);
        (0..n).map(|_| m.decide(&[0x45; 100])).collect()
    }

    #[test]
    fn same_seed_same_fates() {
        let spec = FaultSpec {
            loss: Some(Loss::Random(0.3)),
            duplicate: 0.2,
            corrupt: 0.1,
            delay_ms: 10.0,
            jitter_ms: 5.0,
            distribution: Distribution::Paretonormal,
            reorder: 0.2,
            seed: Some(42),
            ..FaultSpec::default()
        };
        assert_eq!(packets(&spec, 500), packets(&spec, 500));
        let other = FaultSpec {
            seed: Some(43),
            ..spec.clone()
        };
        assert_ne!(packets(&spec, 500), packets(&other, 500));
    }

    #[test]
    fn random_loss_rate_and_corruption_stay_after_the_ip_header() {
        let spec = FaultSpec {
            loss: Some(Loss::Random(0.2)),
            corrupt: 0.5,
            seed: Some(1),
            ..FaultSpec::default()
        };
        let fates = packets(&spec, 20_000);
        let lost = fates.iter().filter(|f| f.drop).count() as f64 / 20_000.0;
        assert!((lost - 0.2).abs() < 0.02, "{lost}");
        assert!(fates
            .iter()
            .filter_map(|f| f.corrupt_bit)
            .all(|b| (20 * 8..100 * 8).contains(&b)));
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts() {
        let ge = GilbertElliott {
            p: 0.05,
            r: 0.3,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        let spec = FaultSpec {
            loss: Some(Loss::GilbertElliott(ge)),
            seed: Some(9),
            ..FaultSpec::default()
        };
        let fates = packets(&spec, 50_000);
        let lost = fates.iter().filter(|f| f.drop).count();
        let runs = fates.windows(2).filter(|w| w[1].drop && !w[0].drop).count();
        let rate = lost as f64 / 50_000.0;
        assert!((rate - ge.mean_loss()).abs() < 0.03, "{rate}");
        let mean_run = lost as f64 / runs as f64;
        assert!((mean_run - 1.0 / 0.3).abs() < 0.5, "{mean_run}");
    }

    #[test]
    fn delay_distributions_center_on_the_delay() {
        for distribution in [
            Distribution::Uniform,
            Distribution::Normal,
            Distribution::Paretonormal,
        ] {
            let spec = FaultSpec {
                delay_ms: 100.0,
                jitter_ms: 10.0,
                distribution,
                seed: Some(3),
                ..FaultSpec::default()
            };
            let fates = packets(&spec, 20_000);
            let mean = fates.iter().map(|f| f.delay.as_secs_f64()).sum::<f64>() / 20_000.0 * 1000.0;
            assert!((mean - 100.0).abs() < 1.5, "{distribution:?} {mean}");
        }
    }

    #[test]
    fn reordered_packets_skip_the_delay() {
        let spec = FaultSpec {
            delay_ms: 50.0,
            reorder: 0.25,
            seed: Some(5),
            ..FaultSpec::default()
        };
        let fates = packets(&spec, 10_000);
        let skipped = fates.iter().filter(|f| f.delay.is_zero()).count() as f64 / 10_000.0;
        assert!((skipped - 0.25).abs() < 0.03, "{skipped}");
    }

    #[test]
    fn flip_bit_flips_one_bit() {
        let mut p = [0u8; 3];
        flip_bit(&mut p, 9);
        assert_eq!(p, [0, 0x40, 0]);
    }
}
