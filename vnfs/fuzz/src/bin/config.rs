//! Fuzz target: the config parser on any text; what it accepts (and fits a
//! small VM) is then applied as a reload to a running dataplane, and the
//! dataplane is reloaded back to the fuzz config: reload, table sizing and
//! stage reuse on every accepted input. The dataplane is built once (see
//! `sluice_fuzz::run_frames` for why).
use std::cell::RefCell;

use vnfs::config;
use vnfs::dataplane::Dataplane;
use vnfs::packet::PacketPool;

thread_local! {
    static RIG: RefCell<(Dataplane, PacketPool)> = RefCell::new((
        Dataplane::new(&config::parse(&sluice_fuzz::config_text(0)).unwrap(), &sluice_fuzz::MACS, 0, 1),
        PacketPool::new(16),
    ));
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        let Ok(cfg) = config::parse(&text) else { return };
        // Tables the fuzzer may ask for are huge: only small ones are built.
        if cfg.table_bytes() >= 64 << 20 {
            return;
        }
        RIG.with(|rig| {
            let (dp, pool) = &mut *rig.borrow_mut();
            // Refused (ports differ, say) or applied: either way consistent.
            let _ = dp.reload("fuzz", &text, pool);
            dp.reload("fuzz", &sluice_fuzz::config_text(0), pool).expect("back to the config it was built with");
            dp.drain(pool);
            assert_eq!(pool.available(), 16);
        });
    });
}
