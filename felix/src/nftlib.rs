//! libnftables, the library the `nft` command itself runs on, loaded at run time
//! (`libnftables.so.1`, Debian's `libnftables1`, a dependency of `nftables`), with one context
//! kept for felix's life on a thread of its own.
//!
//! Why not `nft -f -` per change: every run starts a process and reads the ruleset into a fresh
//! cache before it can check even one element (tens of ms with a 1,000-endpoint table). A
//! context that lives on keeps its cache: the library re-reads the kernel only when someone else
//! changed the ruleset (the generation id moved by more than felix's own commit). Each script is
//! still one transaction, parsed and checked exactly as `nft -f` would, and a failing one changes
//! nothing; after a failure the context is dropped and a fresh one (with an empty cache) is made.
//!
//! The context's thread enters the requested network namespace first (tests and the lab drive a
//! namespace's tables from outside), so the library's netlink socket belongs to it.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::mpsc;

/// Why the library could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NftLibError {
    #[error("libnftables not loadable: {0}")]
    Load(String),
    #[error("entering network namespace {netns}: {reason}")]
    Netns { netns: String, reason: String },
    #[error("nft transaction failed: {0}")]
    Failed(String),
    #[error("the libnftables thread is gone")]
    Gone,
}

const LIBRARY: &CStr = c"libnftables.so.1";
/// `NFT_CTX_OUTPUT_JSON` of libnftables' `enum nft_output_flags`.
const OUTPUT_JSON: u32 = 1 << 4;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type Buffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type GetFlags = unsafe extern "C" fn(*mut c_void) -> u32;
type SetFlags = unsafe extern "C" fn(*mut c_void, u32);

/// The library's entry points felix uses.
struct Api {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    run_cmd: RunCmd,
    buffer_output: Buffer,
    buffer_error: Buffer,
    get_output: GetBuffer,
    get_error: GetBuffer,
    get_flags: GetFlags,
    set_flags: SetFlags,
}

fn symbol(handle: *mut c_void, name: &CStr) -> Result<*mut c_void, NftLibError> {
    // SAFETY: dlsym on a handle dlopen returned, with a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if p.is_null() {
        return Err(NftLibError::Load(format!("no symbol {name:?}")));
    }
    Ok(p)
}

impl Api {
    fn load() -> Result<Api, NftLibError> {
        // SAFETY: dlopen of a system library by its soname; the handle is never closed, so the
        // function pointers stay valid for the process's life.
        let handle = unsafe { libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a thread-local message or null.
            let why = unsafe { libc::dlerror() };
            let why = if why.is_null() {
                "unknown".to_string()
            } else {
                // SAFETY: non-null dlerror result is a NUL-terminated string.
                unsafe { CStr::from_ptr(why) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(NftLibError::Load(why));
        }
        // Each symbol as the function-pointer type of the field it fills.
        macro_rules! entry {
            ($name:literal, $ty:ty) => {
                // SAFETY: the symbols are libnftables' public API, whose C signatures
                // (nftables/libnftables.h) the field types spell out.
                unsafe { std::mem::transmute::<*mut c_void, $ty>(symbol(handle, $name)?) }
            };
        }
        Ok(Api {
            ctx_new: entry!(c"nft_ctx_new", CtxNew),
            ctx_free: entry!(c"nft_ctx_free", CtxFree),
            run_cmd: entry!(c"nft_run_cmd_from_buffer", RunCmd),
            buffer_output: entry!(c"nft_ctx_buffer_output", Buffer),
            buffer_error: entry!(c"nft_ctx_buffer_error", Buffer),
            get_output: entry!(c"nft_ctx_get_output_buffer", GetBuffer),
            get_error: entry!(c"nft_ctx_get_error_buffer", GetBuffer),
            get_flags: entry!(c"nft_ctx_output_get_flags", GetFlags),
            set_flags: entry!(c"nft_ctx_output_set_flags", SetFlags),
        })
    }
}

/// One libnftables context, owned by the thread that made it.
struct Context<'a> {
    api: &'a Api,
    ctx: *mut c_void,
}

impl<'a> Context<'a> {
    fn new(api: &'a Api) -> Result<Context<'a>, NftLibError> {
        // SAFETY: nft_ctx_new(NFT_CTX_DEFAULT); checked for null below.
        let ctx = unsafe { (api.ctx_new)(0) };
        if ctx.is_null() {
            return Err(NftLibError::Load("nft_ctx_new failed".into()));
        }
        // SAFETY: a live context; buffering keeps the library off felix's stdout and stderr.
        unsafe {
            (api.buffer_output)(ctx);
            (api.buffer_error)(ctx);
        }
        Ok(Context { api, ctx })
    }

    fn buffer(&self, get: GetBuffer) -> String {
        // SAFETY: a live context; the buffer getters return a NUL-terminated string (or null)
        // valid until the next call on the context, copied out at once.
        let p = unsafe { get(self.ctx) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: see above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Runs `script` (one transaction); returns what it printed.
    fn run(&mut self, script: &str, json: bool) -> Result<String, NftLibError> {
        let text = CString::new(script)
            .map_err(|_| NftLibError::Failed("a NUL byte in the script".into()))?;
        // SAFETY: a live context and a NUL-terminated script; flags are restored after.
        let (rc, old) = unsafe {
            let old = (self.api.get_flags)(self.ctx);
            if json {
                (self.api.set_flags)(self.ctx, old | OUTPUT_JSON);
            }
            let rc = (self.api.run_cmd)(self.ctx, text.as_ptr());
            (rc, old)
        };
        if json {
            // SAFETY: a live context.
            unsafe { (self.api.set_flags)(self.ctx, old) };
        }
        let out = self.buffer(self.api.get_output);
        let err = self.buffer(self.api.get_error);
        if rc == 0 {
            Ok(out)
        } else {
            Err(NftLibError::Failed(err.trim_end().to_string()))
        }
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: the context is live and freed once.
        unsafe { (self.api.ctx_free)(self.ctx) };
    }
}

enum Job {
    Run {
        script: String,
        json: bool,
        reply: mpsc::Sender<Result<String, NftLibError>>,
    },
}

fn enter(netns: &str) -> Result<(), NftLibError> {
    let bad = |reason: String| NftLibError::Netns {
        netns: netns.to_string(),
        reason,
    };
    let f = File::open(format!("/var/run/netns/{netns}")).map_err(|e| bad(e.to_string()))?;
    // SAFETY: setns(2) on a namespace file held open; it moves only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(bad(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

fn serve(
    netns: Option<String>,
    ready: mpsc::Sender<Result<(), NftLibError>>,
    jobs: mpsc::Receiver<Job>,
) {
    let setup = || -> Result<Api, NftLibError> {
        if let Some(ns) = &netns {
            enter(ns)?;
        }
        Api::load()
    };
    let api = match setup() {
        Ok(api) => api,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut ctx = match Context::new(&api) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Run {
                script,
                json,
                reply,
            } => {
                let r = ctx.run(&script, json);
                if r.is_err() {
                    // Start over with an empty cache: the failure may come from a stale one.
                    match Context::new(&api) {
                        Ok(fresh) => ctx = fresh,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = reply.send(r);
            }
        }
    }
}

/// A long-lived libnftables context in a network namespace (`None`: felix's own).
#[derive(Debug)]
pub struct NftLib {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl NftLib {
    /// Loads the library and makes the context (in `netns` when given).
    pub fn open(netns: Option<&str>) -> Result<NftLib, NftLibError> {
        let (jobs, rx) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let ns = netns.map(str::to_string);
        std::thread::Builder::new()
            .name("libnftables".into())
            .spawn(move || serve(ns, ready_tx, rx))
            .map_err(|e| NftLibError::Load(e.to_string()))?;
        ready.recv().map_err(|_| NftLibError::Gone)??;
        Ok(NftLib { jobs })
    }

    fn call(&self, script: &str, json: bool) -> Result<String, NftLibError> {
        let (reply, answer) = mpsc::channel();
        self.jobs
            .send(Job::Run {
                script: script.to_string(),
                json,
                reply,
            })
            .map_err(|_| NftLibError::Gone)?;
        answer.recv().map_err(|_| NftLibError::Gone)?
    }

    /// Runs `script` as one transaction, as `nft -f` would.
    pub fn apply(&self, script: &str) -> Result<(), NftLibError> {
        self.call(script, false).map(|_| ())
    }

    /// Runs a command and returns its output as JSON (`nft -j`), e.g. `list table inet t`.
    pub fn json(&self, command: &str) -> Result<String, NftLibError> {
        self.call(command, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_that_does_not_parse_is_refused_with_nfts_message() {
        let lib = match NftLib::open(None) {
            Ok(l) => l,
            Err(e) => panic!("libnftables must be installed for felix's tests: {e}"),
        };
        let err = lib.apply("add tabel inet x\n").unwrap_err().to_string();
        assert!(err.contains("syntax error"), "{err}");
    }
}
