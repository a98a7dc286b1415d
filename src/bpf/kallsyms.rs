//! Kernel symbols from `/proc/kallsyms`, for symbolizing stack-trace maps as
//! `sym+0xoff [module]`; reloaded when the module list changes.
#![forbid(unsafe_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::error::{KError, KResult};

/// A sorted symbol table.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// (address, name, module), sorted by address.
    syms: Vec<(u64, String, Option<String>)>,
    modules_sig: u64,
}

fn modules_signature() -> u64 {
    let mut h = DefaultHasher::new();
    std::fs::read("/proc/modules")
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

impl Kallsyms {
    /// Parses kallsyms text (`<hex addr> <type> <name> [module]`).
    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: Vec<(u64, String, Option<String>)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let ty = f.next()?;
                let name = f.next()?;
                if addr == 0 || !matches!(ty, "t" | "T" | "w" | "W") {
                    return None;
                }
                let module = f
                    .next()
                    .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string());
                Some((addr, name.to_string(), module))
            })
            .collect();
        syms.sort_by_key(|s| s.0);
        Kallsyms {
            syms,
            modules_sig: 0,
        }
    }

    /// Reads `/proc/kallsyms`. All-zero addresses (kptr_restrict without
    /// CAP_SYSLOG) are a [`KError::Permission`], not silent garbage.
    pub fn load() -> KResult<Kallsyms> {
        let sig = modules_signature();
        let text = std::fs::read_to_string("/proc/kallsyms")
            .map_err(|e| KError::io("/proc/kallsyms", e))?;
        let mut k = Kallsyms::parse(&text);
        if k.syms.is_empty() && !text.is_empty() {
            return Err(KError::Permission {
                what: "/proc/kallsyms".into(),
                why: "all addresses read as 0 (kernel.kptr_restrict; needs CAP_SYSLOG)".into(),
            });
        }
        k.modules_sig = sig;
        Ok(k)
    }

    /// Reloads if `/proc/modules` changed since the last load; true if reloaded.
    pub fn refresh(&mut self) -> KResult<bool> {
        if modules_signature() == self.modules_sig {
            return Ok(false);
        }
        *self = Kallsyms::load()?;
        Ok(true)
    }

    /// Number of text symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// `sym+0xoff` or `sym+0xoff [module]` for `ip`, or `0x<ip>` if unknown.
    pub fn symbolize(&self, ip: u64) -> String {
        let i = self.syms.partition_point(|s| s.0 <= ip);
        match i.checked_sub(1).map(|i| &self.syms[i]) {
            Some((a, name, module)) => match module {
                Some(m) => format!("{name}+{:#x} [{m}]", ip - a),
                None => format!("{name}+{:#x}", ip - a),
            },
            None => format!("{ip:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes_with_module() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t foo\nffffffffc0000000 t vfn\t[virtio_net]\n0000000000000000 A fixed\nffffffff82000000 D data\n",
        );
        assert_eq!(k.len(), 3);
        assert_eq!(k.symbolize(0xffffffff81000110), "foo+0x10");
        assert_eq!(k.symbolize(0xffffffffc0000004), "vfn+0x4 [virtio_net]");
        assert_eq!(k.symbolize(1), "0x1");
    }
}
