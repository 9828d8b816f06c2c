//! Fuzz target: the management HTTP parser, and the dataplane answering
//! what it parses (with and without the token). The dataplane is built
//! once (see `sluice_fuzz::run_frames` for why); a `PUT /config` that the
//! fuzzer gets accepted changes it for the inputs after.
use std::cell::RefCell;

use vnfs::config;
use vnfs::dataplane::Dataplane;
use vnfs::mgmt::parse_request;
use vnfs::packet::PacketPool;

thread_local! {
    static RIG: RefCell<(Dataplane, PacketPool)> = RefCell::new((
        Dataplane::new(&config::parse(&sluice_fuzz::config_text(0)).unwrap(), &sluice_fuzz::MACS, 0, 1),
        PacketPool::new(16),
    ));
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(Some(req)) = parse_request(data) {
            RIG.with(|rig| {
                let (dp, pool) = &mut *rig.borrow_mut();
                let token: Option<&[u8]> =
                    if data.first().is_some_and(|b| b & 1 == 1) { Some(b"fuzz-token") } else { None };
                dp.set_management_token(token);
                let r = dp.handle_request(&req, pool);
                assert!((200..600).contains(&r.status));
                dp.drain(pool);
                assert_eq!(pool.available(), 16);
            });
        }
    });
}
