//! Fuzz target: frames, fragments and chained super-packets through a
//! stateful or stateless ACL, its fragment verdicts and its connection
//! table, then the router and egress.
fn main() {
    afl::fuzz!(|data: &[u8]| sluice_fuzz::run_acl(data));
}
