//! One organisation's employees, data and audit log are invisible to another.

use std::sync::Arc;

use anyhow::Result;
use clancy::host::Host;
use clancy::store::{SledStore, Store};
use clancy_guests::CUSTOMER_SERVICE;

use crate::env::TestEnv;

#[test]
fn one_orgs_work_and_audit_log_are_invisible_to_another() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.join("store"))?);
    let acme = Host::open_with_store(&data, "acme", store.clone())?;
    let globex = Host::open_with_store(&data, "globex", store)?;
    acme.sandbox().seed()?;
    globex.sandbox().seed()?;
    let globex_support_before = globex.sandbox().all_chat()?;

    let employee = acme.load(TestEnv::plugin_manifest(
        "customer-service",
        CUSTOMER_SERVICE,
    )?)?;
    employee.run("Triage support mail")?;

    assert!(!acme.audit().entries()?.is_empty());
    assert!(
        globex.audit().entries()?.is_empty(),
        "globex sees acme's audit entries"
    );
    assert_eq!(
        globex.sandbox().all_chat()?,
        globex_support_before,
        "acme's tickets landed in globex"
    );
    assert!(acme.audit().verify(None)?.is_intact() && globex.audit().verify(None)?.is_intact());
    Ok(())
}
