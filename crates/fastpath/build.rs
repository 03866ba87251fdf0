//! Builds `bpf/fastpath.bpf.c` with `clang -target bpf` into `OUT_DIR/fastpath.bpf.o`, which
//! the crate embeds. Without a clang that can target BPF the crate still builds: it sets
//! `cfg(fastpath_no_bpf)`, and `FastPath::open` returns `Error::NotBuilt` (the relay then runs
//! in userspace). `FASTPATH_REQUIRE_BPF=1` turns a missing clang into a build error (test.sh);
//! `FASTPATH_CLANG` names another clang binary.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fastpath_no_bpf)");
    println!("cargo::rerun-if-env-changed=FASTPATH_CLANG");
    println!("cargo::rerun-if-env-changed=FASTPATH_REQUIRE_BPF");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../../bpf/fastpath.bpf.c");
    println!("cargo::rerun-if-changed={}", src.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("fastpath.bpf.o");
    let clang = env::var("FASTPATH_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let result = Command::new(&clang)
        .args(["-O2", "-g0", "-Wall", "-Werror", "-target", "bpf", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output();
    let failure = match result {
        Ok(o) if o.status.success() => return,
        Ok(o) => format!(
            "`{clang} -target bpf` failed on {}: {}",
            src.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("no `{clang}` to build the BPF program ({e})"),
    };
    if env::var("FASTPATH_REQUIRE_BPF").is_ok_and(|v| v == "1") {
        panic!("{failure} (FASTPATH_REQUIRE_BPF=1)");
    }
    println!("cargo::warning={failure}: the kernel fast path is not built in (install clang)");
    println!("cargo::rustc-cfg=fastpath_no_bpf");
}
