//! Where a reload of the largest accepted body (~256 KiB of /32 routes)
//! spends its time, on the host: `cargo run --release -p sluice-vnfs
//! --example reload_cost`.
fn main() {
    let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nport mgmt address 10.9.0.1/24\nmanagement mgmt listen 8080\n";
    let mut text = base.to_string();
    let mut i = 0u32;
    while text.len() < 250 * 1024 {
        text += &format!("route 172.16.{}.{}/32 via 10.1.0.2\n", i >> 8, i & 255);
        i += 1;
    }
    let t = std::time::Instant::now();
    for _ in 0..20 {
        let _ = vnfs::registry::parse(&text).unwrap();
    }
    println!("{i} routes, {} bytes", text.len());
    println!("parse: {:?}", t.elapsed() / 20);
    let c = vnfs::registry::parse(&text).unwrap();
    let router = &c.stages[c.stage_by_name("router").unwrap()];
    let t = std::time::Instant::now();
    for _ in 0..20 {
        let _ = router.config.table_bytes(&c);
    }
    println!("router table_bytes: {:?}", t.elapsed() / 20);
    let macs = [[2u8, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]];
    let t = std::time::Instant::now();
    for _ in 0..20 {
        let _ = vnfs::router::Router::from_config(router.settings().unwrap(), &c, &macs, 1);
    }
    println!("router build: {:?}", t.elapsed() / 20);
    let mut pool = vnfs::packet::PacketPool::new(8);
    let mut dp = vnfs::dataplane::Dataplane::new(&vnfs::registry::parse(base).unwrap(), &macs, 0, 1);
    let t = std::time::Instant::now();
    for _ in 0..20 {
        dp.reload("x", &text, &mut pool).unwrap();
    }
    println!("whole reload: {:?}", t.elapsed() / 20);
}
