//! Errors that decide the exit code: usage errors (bad input) exit 2, everything else 1.

/// Bad input from the operator: a wrong argument, an invalid list file. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// A structured usage error (an invalid policy keeps its problems for `--json`).
pub fn usage_error(e: crate::policy::Invalid) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Exit code for an error chain: 2 if any cause is a usage error, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err
        .chain()
        .any(|e| e.is::<UsageError>() || e.is::<crate::policy::Invalid>())
    {
        2
    } else {
        1
    }
}

/// The filter is not loaded at the pin directory: nothing was ever pinned there, or it was
/// removed (`detach --all`) while this command waited for the lock. Exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("floodgate is not loaded (no pinned program at {0}); run `floodgate attach IFACE` first")]
pub struct NotLoaded(pub String);

/// True when the error chain says the filter is not loaded.
pub fn is_not_loaded(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<NotLoaded>())
}
