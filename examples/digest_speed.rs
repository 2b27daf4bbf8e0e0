//! How fast the audit line's SHA-256 can be on this machine: the `sha2` crate the gateway uses against
//! `ring` (OpenSSL's assembly), over a 1 MiB item. Both use the CPU's SHA instructions where it has
//! them, so the figures say what any implementation would cost the gateway per MiB.
//!
//! `cargo run --release --example digest_speed`

use std::time::Instant;

use sha2::Digest;

fn main() {
    let item: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    let rounds = 2_000;
    println!("SHA-256 of a 1 MiB item, ms per MiB ({rounds} rounds each, best of 3):");
    let mut best = [f64::MAX; 2];
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(sha2::Sha256::digest(std::hint::black_box(&item)));
        }
        best[0] = best[0].min(started.elapsed().as_secs_f64() * 1e3 / f64::from(rounds));
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(ring::digest::digest(
                &ring::digest::SHA256,
                std::hint::black_box(&item),
            ));
        }
        best[1] = best[1].min(started.elapsed().as_secs_f64() * 1e3 / f64::from(rounds));
    }
    println!("  sha2 (the gateway's): {:.3}", best[0]);
    println!("  ring:                 {:.3}", best[1]);
}
