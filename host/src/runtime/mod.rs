//! The runtime: one engine, one pre-linked component per employee, a fresh
//! store per task.
//!
//! Lifecycle, in three steps: link (the linker is built once per engine) →
//! validate the employee (once per load: imports vs grants, exports vs the
//! world) → build per-task state (a fresh `Store` with its own limits,
//! deadline, WASI context and handle table). A store is never reused: after
//! a task ends, or traps, it is dropped.
//!
//! The runtime must never let a trap, limit hit or guest panic take the host
//! down: each becomes a failed task with an audit record.

pub mod artifacts;
pub mod bindings;
pub(crate) mod guest_calls;
pub mod handles;
pub mod imports;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::manifest::{MAX_MEMORY_MB, Manifest};
use crate::mediator::Mediator;
use bindings::{Employee as EmployeeWorld, EmployeePre};

/// How often the epoch advances; wall-time limits are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Largest task instruction, in bytes.
pub const MAX_INSTRUCTION_BYTES: usize = 64 * 1024;
/// Guest stdout/stderr kept per task. Printing past it stops the task
/// (the write fails inside the guest), with a message that says so.
const GUEST_OUTPUT_BYTES: usize = 64 * 1024;

/// How a task that trapped with its output at the cap ended: the trap is
/// the failed write past the cap (the guest's std panics on it), so say so
/// rather than "panicked".
fn blame_output_cap(end: TaskEnd, output: &MemoryOutputPipe) -> TaskEnd {
    // The write that failed did not fit: the pipe is within one write of full.
    const LAST_WRITE: usize = 8 * 1024;
    match end {
        TaskEnd::Trapped { .. } if output.contents().len() + LAST_WRITE > GUEST_OUTPUT_BYTES => {
            TaskEnd::Trapped {
                reason: format!(
                    "the employee printed more than {} KiB (stdout and stderr, the cap for one task), so it was stopped; its output up to the cap is kept",
                    GUEST_OUTPUT_BYTES / 1024
                ),
            }
        }
        other => other,
    }
}
/// Concurrent tasks the engine's pool has room for.
const POOL_SLOTS: u32 = 32;
/// The guard region after each pooled memory.
const MEMORY_GUARD_BYTES: u64 = 32 * 1024 * 1024;

/// Loading an employee failed; nothing was instantiated.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("cannot read component {path}: {reason}")]
    Read {
        /// The component path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a valid component.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The component path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The component imports more than it was granted.
    #[error("{employee} is refused: its component {}", .problems.join("; it "))]
    Imports {
        /// The employee.
        employee: String,
        /// One message per refused import.
        problems: Vec<String>,
    },
    /// The component does not export the `clancy:employee/employee` world.
    #[error(
        "{path} is not a Clancy employee (it must export `run: func(task) -> result<report, string>`): {reason}"
    )]
    WrongWorld {
        /// The component path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The engine and linker shared by all employees.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TaskState>,
    /// Components compiled once per host and engine settings.
    artifacts: artifacts::Artifacts,
    clock: Arc<tokio::runtime::Runtime>,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Build the engine (pooling allocator, epoch interruption) and the linker.
    pub fn new() -> wasmtime::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 8)
            .total_memories(POOL_SLOTS * 2)
            .total_tables(POOL_SLOTS * 8)
            .max_memories_per_component(2)
            .max_memory_size(MAX_MEMORY_MB as usize * 1024 * 1024);
        let mut config = Config::new();
        // Each pooled memory reserves only what a manifest may ask for (and
        // a guard), not wasmtime's default 4 GiB: the pool's address space
        // is sized from the host's memory limit (about 35 GiB for 64
        // memories, instead of about 260 GiB). Accesses past the reservation
        // are bounds-checked instead of caught by the guard pages.
        config
            .memory_reservation(u64::from(MAX_MEMORY_MB) * 1024 * 1024)
            .memory_reservation_for_growth(0)
            .memory_guard_size(MEMORY_GUARD_BYTES);
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(1024 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        EmployeeWorld::add_to_linker::<TaskState, wasmtime::component::HasSelf<TaskState>>(
            &mut linker,
            |s| s,
        )?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("clancy-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?
        };
        // Guests run as futures on the calling thread (`block_on`); this
        // runtime's one worker drives the timers their WASI sleeps and polls
        // wait on, and the deadline that drops a task blocked in one.
        let clock = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("clancy-clock")
            .enable_time()
            .build()?;
        Ok(Runtime {
            artifacts: artifacts::Artifacts::in_memory(&engine),
            engine,
            linker,
            clock: Arc::new(clock),
            ticker_stop,
            ticker: Some(ticker),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The same runtime, keeping compiled components in `dir` too (sealed
    /// with `keys`), so the next process reuses them.
    pub fn with_artifacts_in(mut self, dir: PathBuf, keys: Arc<crate::keys::Keys>) -> Runtime {
        self.artifacts = artifacts::Artifacts::on_disk(&self.engine, dir, keys);
        self
    }

    /// How often components were reused and compiled.
    pub fn artifact_stats(&self) -> artifacts::ArtifactStats {
        self.artifacts.stats()
    }

    /// Where the compiled artifact of component `bytes` is kept, if on disk.
    pub fn artifact_path(&self, bytes: &[u8]) -> Option<PathBuf> {
        use sha2::Digest as _;
        self.artifacts.path_of(&sha2::Sha256::digest(bytes).into())
    }

    /// Compile and validate a component for `manifest` (no instantiation).
    pub fn compile(&self, manifest: &Manifest) -> Result<(Component, Vec<String>), LoadError> {
        let bytes = read_component(&manifest.component)?;
        self.compile_bytes(&manifest.component, &bytes)
    }

    /// Compile and validate component `bytes` (`path` names them in errors).
    pub fn compile_bytes(
        &self,
        path: &std::path::Path,
        bytes: &[u8],
    ) -> Result<(Component, Vec<String>), LoadError> {
        let path = path.to_path_buf();
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Invalid {
                path,
                reason: "the file is not WebAssembly".into(),
            });
        }
        let component =
            self.artifacts
                .component(&self.engine, bytes)
                .map_err(|e| LoadError::Invalid {
                    path: path.clone(),
                    reason: first_line(&e),
                })?;
        let imports = imports::import_names(&self.engine, &component);
        Ok((component, imports))
    }

    /// Load an employee from component `bytes`: compile, check imports
    /// against grants, pre-link. Nothing of the component runs here.
    pub fn load(
        &self,
        manifest: Manifest,
        bytes: &[u8],
        mediator: Arc<Mediator>,
    ) -> Result<LoadedEmployee, LoadError> {
        let (component, imports) = self.compile_bytes(&manifest.component, bytes)?;
        let problems = imports::check_imports(&manifest, &imports);
        if !problems.is_empty() {
            return Err(LoadError::Imports {
                employee: manifest.name.clone(),
                problems,
            });
        }
        let path = manifest.component.clone();
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            path: path.clone(),
            reason: first_line(&e),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = EmployeePre::new(pre).map_err(wrong_world)?;
        Ok(LoadedEmployee {
            manifest,
            pre,
            mediator,
            clock: self.clock.clone(),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Read a component file.
/// Largest component file the host reads.
pub const MAX_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;

/// Read a component file: only a regular file of at most
/// [`MAX_COMPONENT_BYTES`] (a device, a FIFO or a huge file is refused
/// before anything is read from it, so nothing hangs or fills memory).
pub fn read_component(path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read as _;
    let refused = |reason: String| LoadError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| refused(e.to_string()))?;
    if !meta.is_file() {
        return Err(refused("it is not a regular file".into()));
    }
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(refused(format!(
            "it is {} bytes; a component may be at most {MAX_COMPONENT_BYTES} bytes",
            meta.len()
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| refused(e.to_string()))?;
    // The file may grow between the check and the read: never read past the cap.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refused(e.to_string()))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(refused(format!(
            "it is larger than {MAX_COMPONENT_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

fn first_line(e: &wasmtime::Error) -> String {
    // The chain's outermost message plus its root cause, on one line.
    let outer = e.to_string();
    let root = e.chain().last().map(|c| c.to_string()).unwrap_or_default();
    if root.is_empty() || root == outer {
        outer
    } else {
        format!("{outer}: {root}")
    }
}

/// An employee ready to run tasks.
pub struct LoadedEmployee {
    manifest: Manifest,
    pre: EmployeePre<TaskState>,
    mediator: Arc<Mediator>,
    clock: Arc<tokio::runtime::Runtime>,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum TaskEnd {
    /// `run` returned a report.
    Completed {
        /// The employee's summary.
        summary: String,
    },
    /// `run` returned an error.
    Failed {
        /// The employee's error.
        error: String,
    },
    /// The guest trapped or hit a limit; its store was discarded.
    Trapped {
        /// What happened, for the operator.
        reason: String,
    },
}

/// The result of one task.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskResult {
    /// The task id (also in every audit entry of the task).
    pub task_id: String,
    /// How it ended.
    pub end: TaskEnd,
    /// What the guest printed to stdout/stderr (capped).
    pub guest_output: String,
}

/// Per-task store data. Never outlives its task.
pub struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    mediator: Arc<Mediator>,
    task_id: String,
    calls: u32,
    max_calls: u32,
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A task could not start (nothing ran).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The instruction is unusable.
    #[error("invalid task: {0}")]
    Instruction(String),
    /// The audit log could not record the start; the task does not run.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl LoadedEmployee {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The mediator every call of this employee goes through.
    pub fn mediator(&self) -> &Mediator {
        &self.mediator
    }

    /// Run one task in a fresh store.
    pub fn run(&self, instruction: &str) -> Result<TaskResult, StartError> {
        self.run_as(&uuid::Uuid::new_v4().to_string(), instruction)
    }

    /// [`LoadedEmployee::run`] under a task id the caller chose (a queued
    /// task keeps the id it was given when it was requested).
    pub fn run_as(&self, task_id: &str, instruction: &str) -> Result<TaskResult, StartError> {
        if instruction.trim().is_empty() {
            return Err(StartError::Instruction("the task is empty".into()));
        }
        if instruction.len() > MAX_INSTRUCTION_BYTES {
            return Err(StartError::Instruction(format!(
                "the task is {} bytes; the limit is {MAX_INSTRUCTION_BYTES} bytes",
                instruction.len()
            )));
        }
        let task_id = task_id.to_string();
        let audit = self.mediator.audit();
        audit.append_behind(
            crate::audit::Kind::TaskStart,
            crate::audit::Record {
                employee: self.manifest.name.clone(),
                task: task_id.clone(),
                args: crate::mediator::truncate(instruction, 500),
                ..Default::default()
            },
        )?;

        self.mediator.refresh_elevations();
        let output = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
        let end = blame_output_cap(
            self.run_in_fresh_store(&task_id, instruction, &output),
            &output,
        );
        let guest_output = String::from_utf8_lossy(&output.contents()).to_string();
        for line in guest_output.lines() {
            tracing::info!(employee = %self.manifest.name, task = %task_id, "guest: {line}");
        }
        let result = match &end {
            TaskEnd::Completed { summary } => format!("completed: {summary}"),
            TaskEnd::Failed { error } => format!("failed: {error}"),
            TaskEnd::Trapped { reason } => format!("trapped: {reason}"),
        };
        let end_record = crate::audit::Record {
            employee: self.manifest.name.clone(),
            task: task_id.clone(),
            result: crate::mediator::truncate(&result, 2000),
            ..Default::default()
        };
        if let Err(e) = audit.append_behind(crate::audit::Kind::TaskEnd, end_record) {
            tracing::error!(task = %task_id, "could not audit the end of the task: {e}");
        }
        Ok(TaskResult {
            task_id,
            end,
            guest_output,
        })
    }

    /// Tell the employee what became of its queued action `approval_id`,
    /// in a fresh instance with the same grants and limits, if its
    /// component exports `on-decision` (components of the plain `employee`
    /// world do not, and are not called). Calls it makes are audited under
    /// `task_id`, the task that queued the action. Returns how it ended, or
    /// `None` when there was nothing to call.
    pub fn on_decision(
        &self,
        task_id: &str,
        approval_id: &str,
        decision: &bindings::clancy::employee::types::Decision,
    ) -> Option<TaskEnd> {
        self.mediator.refresh_elevations();
        let output = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
        let mut store = self.fresh_store(task_id, &output);
        let time_ms = self.manifest.limits.time_ms;
        let memory_mb = self.manifest.limits.memory_mb;
        let trapped = |e: wasmtime::Error| TaskEnd::Trapped {
            reason: describe_trap(&e, time_ms, memory_mb),
        };
        let called = self.within_deadline(async {
            let instance = self
                .pre
                .instance_pre()
                .instantiate_async(&mut store)
                .await?;
            let Ok(func) = instance
                .get_typed_func::<(&str, &bindings::clancy::employee::types::Decision), (Result<(), String>,)>(
                    &mut store,
                    "on-decision",
                )
            else {
                return Ok(None);
            };
            let (answer,) = func.call_async(&mut store, (approval_id, decision)).await?;
            Ok(Some(answer))
        });
        let end = match called {
            Ok(None) => return None,
            Ok(Some(Ok(()))) => TaskEnd::Completed {
                summary: "on-decision returned".into(),
            },
            Ok(Some(Err(error))) => TaskEnd::Failed { error },
            Err(e) => trapped(e),
        };
        let end = blame_output_cap(end, &output);
        for line in String::from_utf8_lossy(&output.contents()).lines() {
            tracing::info!(employee = %self.manifest.name, task = %task_id, "guest: {line}");
        }
        Some(end)
    }

    /// The performance benchmark's baseline: a fresh store, instantiate,
    /// call `run` with `instruction`, and nothing else: no task is recorded
    /// (any call the guest makes still goes through the mediator).
    #[doc(hidden)]
    pub fn bare_run_for_benchmark(&self, instruction: &str) -> TaskEnd {
        let output = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
        self.run_in_fresh_store("benchmark", instruction, &output)
    }

    /// A fresh store for one task, with the employee's limits and deadline.
    fn fresh_store(&self, task_id: &str, output: &MemoryOutputPipe) -> Store<TaskState> {
        let limits = &self.manifest.limits;
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .build();
        let state = TaskState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_mb as usize * 1024 * 1024)
                .table_elements(100_000)
                .instances(16)
                .tables(16)
                .memories(2)
                .trap_on_grow_failure(true)
                .build(),
            mediator: self.mediator.clone(),
            task_id: task_id.to_string(),
            calls: 0,
            max_calls: limits.max_calls,
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        let ticks = limits
            .time_ms
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            .max(1);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Drive one guest call to its end or to the task's wall-time limit,
    /// whichever comes first. The epoch deadline stops a guest computing;
    /// this one also stops a guest blocked inside a WASI call (a sleep, a
    /// poll), which epochs cannot reach: the call's future is dropped with
    /// the guest's fiber, and the task ends as over its time limit.
    fn within_deadline<R>(
        &self,
        call: impl Future<Output = wasmtime::Result<R>>,
    ) -> wasmtime::Result<R> {
        let limit = Duration::from_millis(self.manifest.limits.time_ms);
        self.clock.block_on(async {
            match tokio::time::timeout(limit, call).await {
                Ok(done) => done,
                Err(_elapsed) => Err(wasmtime::Error::new(Trap::Interrupt)),
            }
        })
    }

    fn run_in_fresh_store(
        &self,
        task_id: &str,
        instruction: &str,
        output: &MemoryOutputPipe,
    ) -> TaskEnd {
        let limits = &self.manifest.limits;
        let mut store = self.fresh_store(task_id, output);

        let task = bindings::Task {
            id: task_id.to_string(),
            instruction: instruction.to_string(),
        };
        let outcome = self.within_deadline(async {
            let employee = self.pre.instantiate_async(&mut store).await?;
            employee.call_run(&mut store, &task).await
        });
        match outcome {
            Ok(Ok(report)) => TaskEnd::Completed {
                summary: report.summary,
            },
            Ok(Err(error)) => TaskEnd::Failed { error },
            Err(e) => TaskEnd::Trapped {
                reason: describe_trap(&e, limits.time_ms, limits.memory_mb),
            },
        }
        // `store` is dropped here, with every handle and all guest memory.
    }
}

fn describe_trap(e: &wasmtime::Error, time_ms: u64, memory_mb: u32) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("the task exceeded its time limit of {time_ms} ms"),
        Some(Trap::StackOverflow) => "the employee overflowed its stack (runaway recursion)".into(),
        Some(Trap::MemoryOutOfBounds) => {
            "the employee accessed memory out of bounds (often a runaway recursion overflowing its stack)".into()
        }
        Some(Trap::UnreachableCodeReached) => {
            "the employee panicked or aborted (unreachable code reached)".into()
        }
        Some(other) => format!("the employee trapped: {other}"),
        None => {
            // Host-raised traps (call cap, unknown handle, limits): the root cause says it all.
            let text = e.chain().last().map(|c| c.to_string()).unwrap_or_else(|| e.to_string());
            if text.contains("forcing trap when growing memory") {
                format!("the employee exceeded its memory limit of {memory_mb} MiB")
            } else {
                text
            }
        }
    }
}
