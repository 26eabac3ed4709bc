//! Builds every guest component (the example plugins and the hostile test
//! guests) for wasm32-wasip2, once per run, into its own target dir, and
//! exposes their paths as constants in `guests.rs`.

use std::path::PathBuf;
use std::process::Command;

const GUESTS: &[(&str, &str)] = &[
    ("customer-service", "customer_service"),
    ("accounting-assistant", "accounting_assistant"),
    ("sales-coordinator", "sales_coordinator"),
    ("hostile", "hostile"),
    ("uses-filesystem", "uses_filesystem"),
    ("uses-sockets", "uses_sockets"),
    ("uses-http", "uses_http"),
    ("spender", "spender"),
    ("wrong-world", "wrong-world"),
    ("plain-world", "plain_world"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // A target dir of its own: the outer cargo holds the lock on the main one.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");

    for dir in ["wit", "sdk", "plugins", "tests/guests"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        // Under `cargo clippy` these would lint (and rebuild) the guests through
        // clippy-driver; the guests are linted natively as workspace members.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS");
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed; is the target installed? run `rustup target add wasm32-wasip2`"
    );

    let mut consts = String::new();
    for (package, artifact) in GUESTS {
        let path = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{artifact}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        let name = package.to_uppercase().replace('-', "_");
        consts.push_str(&format!(
            "/// The `{package}` component.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("guests.rs"), consts).expect("cannot write guests.rs");
}
