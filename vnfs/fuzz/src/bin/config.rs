//! Fuzz target: the config parser on any text; what it accepts (and fits a
//! small VM) is then applied as a reload to a running dataplane, and the
//! dataplane is reloaded back to the fuzz config: reload, table sizing and
//! stage reuse on every accepted input. The dataplane is built once (see
//! `sluice_fuzz::run_frames` for why).
use vnfs::registry as config;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        let Ok(cfg) = config::parse(&text) else { return };
        // Tables the fuzzer may ask for are huge: only small ones are built.
        if cfg.table_bytes() >= 64 << 20 {
            return;
        }
        sluice_fuzz::with_base(|dp, pool| {
            // Refused (ports differ, say) or applied: either way consistent.
            let _ = dp.reload("fuzz", &text, pool);
            dp.reload("fuzz", &sluice_fuzz::config_text(0), pool).expect("back to the config it was built with");
            dp.drain(pool);
            assert_eq!(pool.available(), sluice_fuzz::BASE_BUFFERS);
        });
    });
}
