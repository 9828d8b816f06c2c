//! Fuzz target: frames through ingress, router, NAT, LB and egress.
fn main() {
    afl::fuzz!(|data: &[u8]| sluice_fuzz::run_frames(data));
}
