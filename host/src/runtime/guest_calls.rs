//! The guest's calls into the host: the helpers every integration's WIT
//! `Host` impl (in `crate::integrations`) uses, and the impls of the
//! contract's own interfaces (`types`, `explain`). Each call becomes an
//! [`Operation`] handed to the mediator; no integration logic lives here.

use wasmtime::component::Resource;

use super::TaskState;
use super::bindings::CallError;
use super::bindings::clancy::employee::{explain, types};
use super::handles::GrantHandle;
use crate::integrations::{Interface, Operation};
use crate::providers::Response;

/// What a guest call returns: a trap (`Err`) or the contract's result.
pub type CallResult<T> = wasmtime::Result<Result<T, CallError>>;

impl TaskState {
    /// Count a host call; past the task's cap the guest traps.
    pub(crate) fn count_call(&mut self) -> wasmtime::Result<()> {
        self.calls += 1;
        if self.calls > self.max_calls {
            return Err(wasmtime::Error::msg(format!(
                "the task exceeded its cap of {} host calls",
                self.max_calls
            )));
        }
        Ok(())
    }

    /// The task this state belongs to.
    pub(crate) fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The employee's mediator.
    pub(crate) fn mediator(&self) -> &crate::mediator::Mediator {
        &self.mediator
    }

    /// Count the call and hand `op`, made through handle `h`, to the mediator.
    pub(crate) fn mediate<T: GrantHandle>(
        &mut self,
        h: &Resource<T>,
        op: Operation,
        reason: &str,
    ) -> wasmtime::Result<Result<Response, CallError>> {
        let grant = self.table.get(h)?.grant();
        self.count_call()?;
        Ok(self.mediator.call(&self.task_id, grant, op, reason))
    }

    /// One handle per grant (in force now) that reaches `interface`.
    pub(crate) fn handles<T: GrantHandle>(
        &mut self,
        interface: Interface,
    ) -> wasmtime::Result<Vec<Resource<T>>> {
        self.count_call()?;
        let grants = self.mediator.grants_for(interface);
        grants
            .into_iter()
            .map(|g| Ok(self.table.push(T::new(g))?))
            .collect()
    }

    /// The scope handle `h` stands for, e.g. `label:support`.
    pub(crate) fn scope_name<T: GrantHandle>(&self, h: &Resource<T>) -> wasmtime::Result<String> {
        let grant = self.table.get(h)?.grant();
        Ok(self
            .mediator
            .grant(grant)
            .map(|g| g.scope.clone())
            .unwrap_or_default())
    }

    /// Drop a handle the guest is done with.
    pub(crate) fn drop_handle<T: GrantHandle>(&mut self, h: Resource<T>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl types::Host for TaskState {}

impl explain::Host for TaskState {
    fn note(&mut self, text: String) -> wasmtime::Result<()> {
        self.count_call()?;
        self.mediator.note(&self.task_id, &text);
        Ok(())
    }
}
