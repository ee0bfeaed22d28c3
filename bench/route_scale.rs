//! BENCH.md figure 4 for nbgate: what a proxied request pays for the routing
//! table with 1 slot and with 10,000. A full HTTP run would need one container
//! per slot (10,000 JupyterLabs do not fit on the benchmark machine), so this
//! measures the only per-request work that depends on the table size — the
//! slot lookup and the owner check, exactly as `proxy::handle` does them —
//! on the real `Routes`, from as many threads as the machine has cores.
//! `bench/run.sh` turns it into a throughput ratio with nbgate's measured CPU
//! cost per proxied request. Prints one JSON object.
//!
//! cargo run --release --bin route-scale -- [slots...]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nbgate::proxy::routes::{Route, Routes, SessionHash};
use nbgate::slot::SlotId;

const ROUNDS: usize = 5;
const PER_ROUND: Duration = Duration::from_millis(400);

fn table(n: usize) -> (Arc<Routes>, Vec<(SlotId, SessionHash)>) {
    let routes = Arc::new(Routes::default());
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let slot = SlotId::random();
        let route = Route::new(slot.clone(), format!("c{i}"), ([127, 0, 0, 1], 9).into(), "t", None, 0);
        let mut session = [0u8; 32];
        session[..8].copy_from_slice(&(i as u64).to_le_bytes());
        route.add_owner(session);
        routes.insert(Arc::new(route));
        keys.push((slot, session));
    }
    (routes, keys)
}

/// Nanoseconds per lookup + owner check, median of rounds, all threads busy.
fn measure(n: usize, threads: usize) -> f64 {
    let (routes, keys) = table(n);
    let keys = Arc::new(keys);
    let mut per_round = Vec::new();
    for _ in 0..ROUNDS {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (routes, keys) = (routes.clone(), keys.clone());
                std::thread::spawn(move || {
                    // Requests land on slots spread over the whole table.
                    let (mut i, mut done) = (t.wrapping_mul(7919), 0u64);
                    let start = Instant::now();
                    while start.elapsed() < PER_ROUND {
                        for _ in 0..1000 {
                            i = (i.wrapping_mul(1_103_515_245).wrapping_add(12_345)) % keys.len();
                            let (slot, session) = &keys[i];
                            let route = routes.get(slot).expect("present");
                            assert!(route.owner_of([*session]).is_some());
                        }
                        done += 1000;
                    }
                    start.elapsed().as_nanos() as f64 / done as f64
                })
            })
            .collect();
        let ns: Vec<f64> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        per_round.push(ns.iter().sum::<f64>() / ns.len() as f64);
    }
    per_round.sort_by(f64::total_cmp);
    per_round[per_round.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1, 10_000] } else { sizes };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let figures: Vec<String> =
        sizes.iter().map(|&n| format!("\"{n}\": {:.1}", measure(n, threads))).collect();
    println!("{{\"threads\": {threads}, \"ns_per_lookup\": {{{}}}}}", figures.join(", "));
}
