//! Fuzz target: the config parser on any text, then a dataplane built from
//! what it accepts and a reload to the fuzz config (or from it).
use vnfs::config;
use vnfs::dataplane::Dataplane;
use vnfs::packet::PacketPool;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        if let Ok(cfg) = config::parse(&text) {
            // Tables the fuzzer may ask for are huge: only small ones are built.
            if cfg.table_bytes() < 64 << 20 && cfg.ports.len() <= 3 {
                let mut pool = PacketPool::new(16);
                let mut dp = Dataplane::new(&cfg, &sluice_fuzz::MACS, 0, 1);
                let _ = dp.reload("fuzz", &sluice_fuzz::config_text(data.len() as u8), &mut pool);
                let _ = dp.reload("fuzz", &text, &mut pool);
                dp.drain(&mut pool);
                assert_eq!(pool.available(), 16);
            }
        }
    });
}
