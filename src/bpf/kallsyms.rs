//! Kernel symbols from `/proc/kallsyms`, for symbolizing stack-trace maps as
//! `sym+0xoff [module]`; reloaded when the module list changes. An address outside every
//! text the table covers (the kernel's own text, a module's extent from `/proc/modules`) has
//! no symbol: it prints as `0x…` rather than as the nearest symbol below it with a huge
//! offset (BPF JIT images whose symbols the kernel hides live between modules).
#![forbid(unsafe_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::error::{KError, KResult};

/// A sorted symbol table.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// (address, name, module), sorted by address.
    syms: Vec<(u64, String, Option<String>)>,
    /// The kernel's text ranges (`_stext`..`_etext`, `_sinittext`..`_einittext`), when the
    /// table has the markers.
    vmlinux_text: Vec<(u64, u64)>,
    /// Module extents from `/proc/modules` (base, base + size).
    modules: std::collections::HashMap<String, (u64, u64)>,
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
        let mark = |n: &str| syms.iter().find(|s| s.2.is_none() && s.1 == n).map(|s| s.0);
        let vmlinux_text = [("_stext", "_etext"), ("_sinittext", "_einittext")]
            .iter()
            .filter_map(|(a, b)| Some((mark(a)?, mark(b)?)))
            .filter(|(a, b)| a < b)
            .collect();
        Kallsyms {
            syms,
            vmlinux_text,
            modules: Default::default(),
            modules_sig: 0,
        }
    }

    /// Takes module extents from `/proc/modules` text (`name size refs deps state addr`);
    /// lines without an address (0: no CAP_SYSLOG) are skipped.
    pub fn set_modules(&mut self, text: &str) {
        self.modules = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let size: u64 = f.get(1)?.parse().ok()?;
                let base = u64::from_str_radix(f.get(5)?.trim_start_matches("0x"), 16).ok()?;
                (base != 0).then(|| (f[0].to_string(), (base, base.saturating_add(size))))
            })
            .collect();
    }

    /// Reads `/proc/kallsyms`. All-zero addresses (kptr_restrict without
    /// CAP_SYSLOG) are a [`KError::Permission`], not silent garbage.
    pub fn load() -> KResult<Kallsyms> {
        let sig = modules_signature();
        let text = std::fs::read_to_string("/proc/kallsyms")
            .map_err(|e| KError::io("/proc/kallsyms", e))?;
        let mut k = Kallsyms::parse(&text);
        k.set_modules(&std::fs::read_to_string("/proc/modules").unwrap_or_default());
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
        let covered = |module: &Option<String>| match module {
            None => {
                self.vmlinux_text.is_empty()
                    || self
                        .vmlinux_text
                        .iter()
                        .any(|(a, b)| (*a..*b).contains(&ip))
            }
            Some(m) => self
                .modules
                .get(m)
                .is_none_or(|(a, b)| (*a..*b).contains(&ip)),
        };
        match i
            .checked_sub(1)
            .map(|i| &self.syms[i])
            .filter(|s| covered(&s.2))
        {
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

    /// Addresses past the kernel's text or a module's extent (hidden BPF JIT images) have
    /// no symbol; `[bpf]` symbols have no `/proc/modules` line and are taken as they are.
    #[test]
    fn addresses_outside_every_text_have_no_symbol() {
        let mut k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t foo\nffffffff82276988 T _etext\n\
             ffffffff8377f000 T _sinittext\nffffffff83780000 t init_foo\nffffffff837f5870 T _einittext\n\
             ffffffffc0000000 t vfn\t[virtio_net]\nffffffffc0100000 t bpf_prog_0123456789abcdef_f\t[bpf]\n",
        );
        k.set_modules("virtio_net 65536 0 - Live 0xffffffffc0000000\nnoaddr 4096 0 - Live 0x0000000000000000\n");
        assert_eq!(k.symbolize(0xffffffff81000110), "foo+0x10");
        assert_eq!(k.symbolize(0xffffffff82276990), "0xffffffff82276990");
        assert_eq!(k.symbolize(0xffffffff83780004), "init_foo+0x4");
        assert_eq!(k.symbolize(0xffffffffc000fff0), "vfn+0xfff0 [virtio_net]");
        assert_eq!(k.symbolize(0xffffffffc0010000), "0xffffffffc0010000");
        assert_eq!(
            k.symbolize(0xffffffffc0100040),
            "bpf_prog_0123456789abcdef_f+0x40 [bpf]"
        );
    }
}
