//! Fuzz target: the management HTTP parser, and the dataplane answering
//! what it parses (with and without the token). The dataplane is built
//! once (see `sluice_fuzz::run_frames` for why); a `PUT /config` that the
//! fuzzer gets accepted changes it for the inputs after.
use vnfs::mgmt::parse_request;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(Some(req)) = parse_request(data) {
            sluice_fuzz::with_base(|dp, pool| {
                let token: Option<&[u8]> =
                    if data.first().is_some_and(|b| b & 1 == 1) { Some(b"fuzz-token") } else { None };
                dp.set_management_token(token);
                let r = dp.handle_request(&req, pool);
                assert!((200..600).contains(&r.status));
                dp.drain(pool);
                assert_eq!(pool.available(), sluice_fuzz::BASE_BUFFERS);
            });
        }
    });
}
