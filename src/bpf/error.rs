//! Errors of the kernel layer: typed so that a probe can fall back to its next
//! attach method, or say exactly why it cannot run.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

/// Everything the kernel layer can fail with.
#[derive(Debug)]
pub enum KError {
    /// The running kernel cannot do this (compiled out, too old, refused by policy).
    Unsupported {
        /// What was attempted (`"kprobe attach"`, `"fentry program"`, ...).
        what: String,
        /// Why, as precisely as we know.
        why: String,
    },
    /// A tracepoint, kernel function, map or program that does not exist.
    NotFound {
        /// Kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// No kernel BTF could be found; `tried` lists the sources, in order.
    MissingBtf {
        /// Each source tried and why it failed.
        tried: Vec<String>,
    },
    /// The verifier rejected a program.
    Verifier {
        /// Program name.
        prog: String,
        /// errno of `BPF_PROG_LOAD`.
        errno: i32,
        /// The verifier log (possibly truncated to its tail).
        log: String,
        /// A poisoned CO-RE relocation the log points at, described.
        core: Option<String>,
    },
    /// Not permitted (missing capability, lockdown, memlock limit).
    Permission {
        /// What was attempted.
        what: String,
        /// Hint or errno detail.
        why: String,
    },
    /// A syscall or file operation failed.
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The object itself (ELF/BTF/relocation) is at fault.
    Object(super::Error),
}

impl KError {
    /// `Io` from a context and error; EPERM/EACCES become `Permission`, explained by what this
    /// process lacks (its capability sets and the BPF/perf sysctls, [`crate::caps::diagnose`]).
    pub fn io(what: impl Into<String>, source: io::Error) -> KError {
        let what = what.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => KError::permission(what, &source),
            _ => KError::Io { what, source },
        }
    }

    /// `Permission` for `what` refused with `source` (EPERM/EACCES): the reason names the
    /// missing capability and the sysctl that requires it, or says that the process holds what
    /// the operation needs (then a policy refused it).
    pub fn permission(what: impl Into<String>, source: &io::Error) -> KError {
        let what = what.into();
        let why = crate::caps::diagnose(crate::caps::Op::of(&what));
        KError::Permission {
            what,
            why: format!("{source}: {why}"),
        }
    }

    /// Shorthand for [`KError::Unsupported`].
    pub fn unsupported(what: impl Into<String>, why: impl Into<String>) -> KError {
        KError::Unsupported {
            what: what.into(),
            why: why.into(),
        }
    }

    /// True for [`KError::Unsupported`] (the "try the next attach method" case).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, KError::Unsupported { .. })
    }

    /// The errno, if a syscall failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KError::Io { source, .. } => source.raw_os_error(),
            KError::Verifier { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl fmt::Display for KError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KError::Unsupported { what, why } => {
                write!(f, "{what}: unsupported on this kernel: {why}")
            }
            KError::NotFound { what, name } => write!(f, "{what} {name:?} not found"),
            KError::MissingBtf { tried } => {
                write!(f, "no kernel BTF found (tried: {})", tried.join("; "))
            }
            KError::Verifier {
                prog,
                errno,
                log,
                core,
            } => {
                write!(
                    f,
                    "program {prog}: verifier rejected it ({})",
                    io::Error::from_raw_os_error(*errno)
                )?;
                if let Some(c) = core {
                    write!(f, "; {c}")?;
                }
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                for l in tail.iter().rev() {
                    write!(f, "\n  {l}")?;
                }
                Ok(())
            }
            KError::Permission { what, why } => write!(f, "{what}: permission denied: {why}"),
            KError::Io { what, source } => write!(f, "{what}: {source}"),
            KError::Object(e) => write!(f, "BPF object: {e}"),
        }
    }
}

impl std::error::Error for KError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KError::Io { source, .. } => Some(source),
            KError::Object(e) => Some(e),
            _ => None,
        }
    }
}

impl From<super::Error> for KError {
    fn from(e: super::Error) -> Self {
        KError::Object(e)
    }
}

/// Result alias for the kernel layer.
pub type KResult<T> = std::result::Result<T, KError>;
