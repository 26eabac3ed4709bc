//! Components are compiled once per host and engine settings: reused in
//! the process and by the next one, and an artifact this host did not
//! produce (tampered with, or sealed by another host) is never loaded.

use anyhow::{Context, Result};
use clancy::org::{DataDirMode, Org};
use clancy_guests::HOSTILE;

use crate::env::{HOSTILE_GRANTS, TestEnv, completed};

/// Load the hostile guest in `host`, run one task, and say how the
/// runtime got its component so far.
fn load_and_run(host: &Org) -> Result<clancy::runtime::artifacts::ArtifactStats> {
    let employee = host.load(TestEnv::manifest(HOSTILE, HOSTILE_GRANTS)?)?;
    let said = completed(&employee.run("count-handles")?)?.to_string();
    assert!(said.starts_with("mailboxes 1 channels 1"), "{said}");
    Ok(host.runtime()?.artifact_stats())
}

#[test]
fn a_component_is_compiled_once_and_an_artifact_this_host_did_not_make_is_never_loaded()
-> Result<()> {
    let TestEnv { dir, host } = TestEnv::new()?;
    let data = dir.path().join("data");
    let bytes = std::fs::read(HOSTILE)?;

    // First load compiles; the second, in the same process, reuses it.
    let first = load_and_run(&host)?;
    assert_eq!((first.compiled, first.reused), (1, 0), "{first:?}");
    let second = load_and_run(&host)?;
    assert_eq!((second.compiled, second.reused), (1, 1), "{second:?}");
    let artifact = host
        .runtime()?
        .artifact_path(&bytes)
        .context("no artifact path")?;
    assert!(artifact.starts_with(data.join("compiled")));
    let good = std::fs::read(&artifact)?;
    drop(host);

    // The next process reuses the sealed artifact: nothing compiled.
    let host = Org::open(&data, "default", DataDirMode::Existing)?;
    let next = load_and_run(&host)?;
    assert_eq!(
        (next.compiled, next.reused, next.refused),
        (0, 1, 0),
        "{next:?}"
    );
    drop(host);

    // One byte of the code changed: refused, compiled again, replaced.
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last / 2] ^= 0x01;
    std::fs::write(&artifact, &tampered)?;
    let host = Org::open(&data, "default", DataDirMode::Existing)?;
    let after = load_and_run(&host)?;
    assert_eq!((after.compiled, after.refused), (1, 1), "{after:?}");
    let replaced = std::fs::read(&artifact)?;
    assert_ne!(replaced, tampered);
    drop(host);

    // An artifact of the same component and engine settings sealed by
    // another host (another data dir's key): refused, compiled again.
    let other = TestEnv::new()?;
    load_and_run(&other.host)?;
    let foreign_path = other
        .host
        .runtime()?
        .artifact_path(&bytes)
        .context("no artifact path")?;
    let foreign = std::fs::read(&foreign_path)?;
    assert_eq!(
        foreign_path.file_name(),
        artifact.file_name(),
        "same component, same engine settings"
    );
    std::fs::write(&artifact, &foreign)?;
    let host = Org::open(&data, "default", DataDirMode::Existing)?;
    let after = load_and_run(&host)?;
    assert_eq!((after.compiled, after.refused), (1, 1), "{after:?}");
    // And a truncated file, or garbage where the artifact was.
    drop(host);
    for junk in [&b"short"[..], &[0u8; 4096][..]] {
        std::fs::write(&artifact, junk)?;
        let host = Org::open(&data, "default", DataDirMode::Existing)?;
        let after = load_and_run(&host)?;
        assert_eq!((after.compiled, after.refused), (1, 1), "{after:?}");
    }
    Ok(())
}
