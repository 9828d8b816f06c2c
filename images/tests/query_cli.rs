//! The request lines `sluice show`, `trace` and `capture` send.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

/// Runs `sluice ARGS…` against a listener on 127.0.0.1 and returns the
/// request line it sent (answered with a 400, so the tool stops there).
fn request_line(args: &[&str]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg(args[0]).arg(&addr).args(&args[1..]).env_remove("SLUICE_TOKEN");
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let (s, _) = l.accept().unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let _ = (&s).write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    drop(s);
    child.wait().unwrap();
    line.trim_end().to_string()
}

#[test]
fn show_trace_and_capture_encode_spaces_in_the_query() {
    assert_eq!(
        request_line(&["show", "sessions", "proto=tcp&addr=10.0.0.2"]),
        "GET /show/sessions?proto=tcp&addr=10.0.0.2 HTTP/1.1"
    );
    assert_eq!(
        request_line(&["trace", "filter=tcp and port 80&count=3"]),
        "POST /trace?filter=tcp+and+port+80&count=3 HTTP/1.1"
    );
    assert_eq!(
        request_line(&["show", "sessions", "filter=tcp and port 80"]),
        "GET /show/sessions?filter=tcp+and+port+80 HTTP/1.1"
    );
    assert_eq!(
        request_line(&["capture", "lan", "filter=host 10.0.0.2#x"]),
        "GET /capture?port=lan&filter=host+10.0.0.2%23x HTTP/1.1"
    );
}
