//! Kernel ABI structures the kernel layer passes to `bpf(2)`, `perf_event_open(2)`
//! and reads from `mmap`ed pages, with their layouts checked at compile time
//! against the UAPI headers (`include/uapi/linux/bpf.h`, `perf_event.h`, `btf.h`).
//!
//! Each `bpf_attr` variant we use is its own `#[repr(C)]` struct holding exactly
//! the leading fields of that command's anonymous struct; the kernel zero-fills
//! the rest when we pass a smaller `size`.
#![allow(missing_docs)]

use std::mem::{offset_of, size_of};

/// Plain-old-data: every bit pattern is valid and the type has no padding the
/// kernel could misread (padding fields are explicit).
///
/// # Safety
/// Implement only for `#[repr(C)]` structs of integers/byte arrays with
/// explicit padding, whose size equals the sum of their fields.
pub unsafe trait Pod: Copy + Default {}

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: every type listed is a #[repr(C)] struct of integers and byte
        // arrays with explicit padding fields (checked by the layout asserts below).
        unsafe impl Pod for $t {}
    )* };
}

// The numbers (commands, map and program types, flags, errnos) live in the pure layer's
// `uapi`, shared with the ELF/CO-RE code; re-exported so `abi::MAP_ARRAY` keeps working.
pub use super::obj::uapi::*;

/// `bpf_attr` for `BPF_MAP_CREATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; 16],
    pub map_ifindex: u32,
    pub btf_fd: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub map_extra: u64,
}

/// `bpf_attr` for `BPF_MAP_*_ELEM` and `BPF_MAP_GET_NEXT_KEY` (`value` is `next_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// `bpf_attr` for `BPF_MAP_*_BATCH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapBatchAttr {
    pub in_batch: u64,
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// `bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
    pub prog_btf_fd: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub func_info_cnt: u32,
    pub line_info_rec_size: u32,
    pub line_info: u64,
    pub line_info_cnt: u32,
    pub attach_btf_id: u32,
    pub attach_btf_obj_fd: u32,
    pub core_relo_cnt: u32,
    pub fd_array: u64,
    pub core_relos: u64,
    pub core_relo_rec_size: u32,
    pub log_true_size: u32,
}

/// `bpf_attr` for `BPF_BTF_LOAD`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BtfLoadAttr {
    pub btf: u64,
    pub btf_log_buf: u64,
    pub btf_size: u32,
    pub btf_log_size: u32,
    pub btf_log_level: u32,
    pub btf_log_true_size: u32,
}

/// `bpf_attr` for `BPF_LINK_CREATE` (the union after `flags` as two u64s:
/// `perf_event.bpf_cookie` or `tracing.{target_btf_id, cookie}`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkCreateAttr {
    pub prog_fd: u32,
    pub target_fd: u32,
    pub attach_type: u32,
    pub flags: u32,
    pub extra: [u64; 2],
}

/// `bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RawTpOpenAttr {
    pub name: u64,
    pub prog_fd: u32,
    pub _pad: u32,
}

/// `bpf_attr` for `BPF_*_GET_NEXT_ID` and `BPF_*_GET_FD_BY_ID` (`start_id` is the id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GetIdAttr {
    pub start_id: u32,
    pub next_id: u32,
    pub open_flags: u32,
}

/// `bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InfoAttr {
    pub bpf_fd: u32,
    pub info_len: u32,
    pub info: u64,
}

/// `bpf_attr` for `BPF_MAP_FREEZE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FdAttr {
    pub fd: u32,
}

/// `bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ObjPinAttr {
    pub pathname: u64,
    pub bpf_fd: u32,
    pub file_flags: u32,
}

/// `struct bpf_prog_info` up to `attach_btf_id` (Linux 6.x; older kernels fill a prefix and
/// leave the rest zero). `run_time_ns`/`run_cnt` count only while run-time stats are enabled
/// (`BPF_ENABLE_STATS` or the `kernel.bpf_stats_enabled` sysctl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub tag: [u8; 8],
    pub jited_prog_len: u32,
    pub xlated_prog_len: u32,
    pub jited_prog_insns: u64,
    pub xlated_prog_insns: u64,
    pub load_time: u64,
    pub created_by_uid: u32,
    pub nr_map_ids: u32,
    pub map_ids: u64,
    pub name: [u8; 16],
    pub ifindex: u32,
    /// `gpl_compatible:1` and 31 reserved bits.
    pub flags: u32,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub nr_jited_ksyms: u32,
    pub nr_jited_func_lens: u32,
    pub jited_ksyms: u64,
    pub jited_func_lens: u64,
    pub btf_id: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub nr_func_info: u32,
    pub nr_line_info: u32,
    pub line_info: u64,
    pub jited_line_info: u64,
    pub nr_jited_line_info: u32,
    pub line_info_rec_size: u32,
    pub jited_line_info_rec_size: u32,
    pub nr_prog_tags: u32,
    pub prog_tags: u64,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
    pub verified_insns: u32,
    pub attach_btf_obj_id: u32,
    pub attach_btf_id: u32,
    /// The struct's tail padding (`__attribute__((aligned(8)))`), zero.
    pub _pad: u32,
}

/// `bpf_attr` for `BPF_ENABLE_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EnableStatsAttr {
    pub type_: u32,
}

/// `struct perf_event_attr` (`PERF_ATTR_SIZE_VER8`, 136 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PerfEventAttr {
    pub type_: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    /// The bitfield word: bit 0 `disabled`, bit 14 `watermark`, ...
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub config1: u64,
    pub config2: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub _reserved_2: u16,
    pub aux_sample_size: u32,
    pub _reserved_3: u32,
    pub sig_data: u64,
    pub config3: u64,
}

/// `struct perf_event_mmap_page` (first page of a perf ring).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PerfEventMmapPage {
    pub version: u32,
    pub compat_version: u32,
    pub lock: u32,
    pub index: u32,
    pub offset: i64,
    pub time_enabled: u64,
    pub time_running: u64,
    pub capabilities: u64,
    pub pmc_width: u16,
    pub time_shift: u16,
    pub time_mult: u32,
    pub time_offset: u64,
    pub time_zero: u64,
    pub size: u32,
    pub _reserved_1: u32,
    pub time_cycles: u64,
    pub time_mask: u64,
    pub _reserved: [u64; 116],
    pub data_head: u64,
    pub data_tail: u64,
    pub data_offset: u64,
    pub data_size: u64,
    pub aux_head: u64,
    pub aux_tail: u64,
    pub aux_offset: u64,
    pub aux_size: u64,
}

/// `struct perf_event_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PerfEventHeader {
    pub type_: u32,
    pub misc: u16,
    pub size: u16,
}

/// `struct btf_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BtfHeader {
    pub magic: u16,
    pub version: u8,
    pub flags: u8,
    pub hdr_len: u32,
    pub type_off: u32,
    pub type_len: u32,
    pub str_off: u32,
    pub str_len: u32,
}

pod!(
    MapCreateAttr,
    MapElemAttr,
    MapBatchAttr,
    ProgLoadAttr,
    BtfLoadAttr,
    LinkCreateAttr,
    RawTpOpenAttr,
    GetIdAttr,
    InfoAttr,
    FdAttr,
    ObjPinAttr,
    ProgInfo,
    EnableStatsAttr,
    PerfEventAttr
);

/// Offsets inside [`PerfEventMmapPage`] used on the live mapping.
pub const PERF_DATA_HEAD: usize = offset_of!(PerfEventMmapPage, data_head);
pub const PERF_DATA_TAIL: usize = offset_of!(PerfEventMmapPage, data_tail);
pub const PERF_DATA_OFFSET: usize = offset_of!(PerfEventMmapPage, data_offset);
pub const PERF_DATA_SIZE: usize = offset_of!(PerfEventMmapPage, data_size);

macro_rules! check {
    ($t:ty, $size:expr $(, $f:ident = $off:expr)*) => {
        const _: () = assert!(size_of::<$t>() == $size);
        $( const _: () = assert!(offset_of!($t, $f) == $off); )*
    };
}

// Layouts from the UAPI headers (offsets computed from linux/bpf.h, perf_event.h, btf.h).
check!(
    MapCreateAttr,
    72,
    map_type = 0,
    max_entries = 12,
    map_flags = 16,
    numa_node = 24,
    map_name = 28,
    map_ifindex = 44,
    btf_fd = 48,
    btf_key_type_id = 52,
    btf_value_type_id = 56,
    btf_vmlinux_value_type_id = 60,
    map_extra = 64
);
check!(MapElemAttr, 32, map_fd = 0, key = 8, value = 16, flags = 24);
check!(
    MapBatchAttr,
    56,
    in_batch = 0,
    out_batch = 8,
    keys = 16,
    values = 24,
    count = 32,
    map_fd = 36,
    elem_flags = 40,
    flags = 48
);
check!(
    ProgLoadAttr,
    144,
    prog_type = 0,
    insn_cnt = 4,
    insns = 8,
    license = 16,
    log_level = 24,
    log_size = 28,
    log_buf = 32,
    kern_version = 40,
    prog_flags = 44,
    prog_name = 48,
    prog_ifindex = 64,
    expected_attach_type = 68,
    prog_btf_fd = 72,
    func_info_rec_size = 76,
    func_info = 80,
    func_info_cnt = 88,
    line_info_rec_size = 92,
    line_info = 96,
    line_info_cnt = 104,
    attach_btf_id = 108,
    attach_btf_obj_fd = 112,
    core_relo_cnt = 116,
    fd_array = 120,
    core_relos = 128,
    core_relo_rec_size = 136,
    log_true_size = 140
);
check!(
    BtfLoadAttr,
    32,
    btf = 0,
    btf_log_buf = 8,
    btf_size = 16,
    btf_log_size = 20,
    btf_log_level = 24,
    btf_log_true_size = 28
);
check!(
    LinkCreateAttr,
    32,
    prog_fd = 0,
    target_fd = 4,
    attach_type = 8,
    flags = 12,
    extra = 16
);
check!(RawTpOpenAttr, 16, name = 0, prog_fd = 8);
check!(GetIdAttr, 12, start_id = 0, next_id = 4, open_flags = 8);
check!(InfoAttr, 16, bpf_fd = 0, info_len = 4, info = 8);
check!(ObjPinAttr, 16, pathname = 0, bpf_fd = 8, file_flags = 12);
check!(
    ProgInfo,
    232,
    prog_type = 0,
    id = 4,
    tag = 8,
    jited_prog_len = 16,
    load_time = 40,
    nr_map_ids = 52,
    map_ids = 56,
    name = 64,
    ifindex = 80,
    netns_dev = 88,
    jited_ksyms = 112,
    btf_id = 128,
    func_info = 136,
    line_info = 152,
    nr_prog_tags = 180,
    prog_tags = 184,
    run_time_ns = 192,
    run_cnt = 200,
    recursion_misses = 208,
    verified_insns = 216,
    attach_btf_id = 224
);
check!(EnableStatsAttr, 4, type_ = 0);
check!(
    PerfEventAttr,
    136,
    type_ = 0,
    size = 4,
    config = 8,
    sample_period = 16,
    sample_type = 24,
    read_format = 32,
    flags = 40,
    wakeup_events = 48,
    bp_type = 52,
    config1 = 56,
    config2 = 64,
    branch_sample_type = 72,
    sample_regs_user = 80,
    sample_stack_user = 88,
    clockid = 92,
    sample_regs_intr = 96,
    aux_watermark = 104,
    sample_max_stack = 108,
    aux_sample_size = 112,
    sig_data = 120,
    config3 = 128
);
check!(
    PerfEventMmapPage,
    1088,
    version = 0,
    lock = 8,
    offset = 16,
    capabilities = 40,
    pmc_width = 48,
    time_offset = 56,
    size = 72,
    time_cycles = 80,
    data_head = 1024,
    data_tail = 1032,
    data_offset = 1040,
    data_size = 1048,
    aux_size = 1080
);
check!(PerfEventHeader, 8, type_ = 0, misc = 4, size = 6);
check!(
    BtfHeader,
    24,
    magic = 0,
    version = 2,
    flags = 3,
    hdr_len = 4,
    type_off = 8,
    type_len = 12,
    str_off = 16,
    str_len = 20
);
check!(super::insn::Insn, 8, code = 0, regs = 1, off = 2, imm = 4);

/// `PERF_ATTR_SIZE_VER8`.
pub const PERF_ATTR_SIZE: u32 = size_of::<PerfEventAttr>() as u32;

/// Copies a name into a fixed NUL-terminated array, truncating and keeping only
/// the characters the kernel accepts in object names (alnum, `_`, `.`).
pub fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out[..15].iter_mut().zip(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
    ) {
        *o = b;
    }
    out
}

/// Bytes up to the first NUL.
pub fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_header_matches_parser_constant() {
        assert_eq!(size_of::<BtfHeader>() as u32, super::super::btf::HEADER_LEN);
    }

    #[test]
    fn names_are_sanitized_and_truncated() {
        assert_eq!(&obj_name("a-b.c_d")[..6], b"ab.c_d");
        let n = obj_name("a_very_long_program_name");
        assert_eq!(n[15], 0);
        assert_eq!(c_str(&n), "a_very_long_pro");
    }

    /// The `bpf_prog_info` fields we read sit where the running kernel's BTF says (the const
    /// checks above are from the UAPI header; this compares with the kernel itself).
    #[test]
    fn prog_info_layout_matches_running_kernel_btf() {
        use super::super::btf::{Btf, Kind};
        let Some(raw) = crate::bpf::target_btf::vmlinux_for_test("prog_info_layout") else {
            return;
        };
        let btf = Btf::parse(&raw).expect("parse vmlinux BTF");
        let id = btf
            .find_by_name_kind("bpf_prog_info", Kind::Struct)
            .expect("struct bpf_prog_info in vmlinux BTF");
        let ours = [
            ("type", offset_of!(ProgInfo, prog_type)),
            ("id", offset_of!(ProgInfo, id)),
            ("name", offset_of!(ProgInfo, name)),
            ("nr_map_ids", offset_of!(ProgInfo, nr_map_ids)),
            ("netns_ino", offset_of!(ProgInfo, netns_ino)),
            ("prog_tags", offset_of!(ProgInfo, prog_tags)),
            ("run_time_ns", offset_of!(ProgInfo, run_time_ns)),
            ("run_cnt", offset_of!(ProgInfo, run_cnt)),
            ("recursion_misses", offset_of!(ProgInfo, recursion_misses)),
            ("verified_insns", offset_of!(ProgInfo, verified_insns)),
            ("attach_btf_id", offset_of!(ProgInfo, attach_btf_id)),
        ];
        for (name, off) in ours {
            let (_, bits) = btf
                .find_member(id, name)
                .unwrap()
                .unwrap_or_else(|| panic!("bpf_prog_info.{name} missing from the kernel's BTF"));
            assert_eq!(bits as usize, off * 8, "bpf_prog_info.{name}");
        }
        // The kernel's struct may have grown; ours is a prefix of it.
        assert!(btf.resolve_size(id).unwrap() >= size_of::<ProgInfo>() as u64);
    }

    #[test]
    fn ioctl_numbers() {
        // _IOW('$', 8, __u32) = dir(1)<<30 | size(4)<<16 | '$'<<8 | 8
        assert_eq!(
            PERF_EVENT_IOC_SET_BPF,
            (1 << 30) | (4 << 16) | (0x24 << 8) | 8
        );
    }
}
