//! `struct bpf_insn`: 8 bytes, `code`, `dst_reg:4 src_reg:4`, `off: i16`, `imm: i32`
//! (little-endian objects only, as clang `-target bpf` produces on x86/arm64).
#![forbid(unsafe_code)]

use super::{Error, Result};

/// Instruction classes (`BPF_CLASS(code)`).
pub mod class {
    /// Non-standard loads (ld_imm64).
    pub const LD: u8 = 0x00;
    /// Loads from memory into a register.
    pub const LDX: u8 = 0x01;
    /// Store immediate.
    pub const ST: u8 = 0x02;
    /// Store register.
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls, exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// Memory access sizes (`BPF_SIZE(code)`).
pub mod size {
    /// 4 bytes.
    pub const W: u8 = 0x00;
    /// 2 bytes.
    pub const H: u8 = 0x08;
    /// 1 byte.
    pub const B: u8 = 0x10;
    /// 8 bytes.
    pub const DW: u8 = 0x18;
}

/// `BPF_K`: the operand is `imm`.
pub const SRC_K: u8 = 0x00;
/// `BPF_X`: the operand is `src_reg`.
pub const SRC_X: u8 = 0x08;
/// `BPF_IMM` mode.
pub const MODE_IMM: u8 = 0x00;
/// `BPF_MEM` mode.
pub const MODE_MEM: u8 = 0x60;
/// `BPF_MOV` operation.
pub const OP_MOV: u8 = 0xb0;
/// `BPF_CALL` operation.
pub const OP_CALL: u8 = 0x80;
/// `BPF_EXIT` operation.
pub const OP_EXIT: u8 = 0x90;
/// `BPF_JA` operation.
pub const OP_JA: u8 = 0x00;

/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 16-byte `ld_imm64`.
pub const LD_IMM64: u8 = class::LD | MODE_IMM | size::DW;
/// `BPF_JMP | BPF_CALL`.
pub const CALL: u8 = class::JMP | OP_CALL;
/// `BPF_JMP | BPF_EXIT`.
pub const EXIT: u8 = class::JMP | OP_EXIT;

/// `src_reg` of `ld_imm64`: `imm` is a map fd.
pub const PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of `ld_imm64`: `imm` is a map fd, second `imm` an offset into value 0.
pub const PSEUDO_MAP_VALUE: u8 = 2;
/// `src_reg` of `ld_imm64`: kernel BTF id of a variable.
pub const PSEUDO_BTF_ID: u8 = 3;
/// `src_reg` of `ld_imm64`: `imm` is a pc-relative function offset (callbacks).
pub const PSEUDO_FUNC: u8 = 4;
/// `src_reg` of `call`: bpf-to-bpf call, `imm` is pc-relative.
pub const PSEUDO_CALL: u8 = 1;
/// `src_reg` of `call`: kfunc call.
pub const PSEUDO_KFUNC_CALL: u8 = 2;

/// The helper id libbpf uses to poison unresolvable CO-RE relocations
/// (`0xbad2310`, "bad relo"); the verifier rejects it only if it is reachable.
pub const POISON_HELPER: i32 = 0x0bad_2310;

/// One BPF instruction, laid out exactly like the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high nibble.
    pub regs: u8,
    /// Signed offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// Size of one instruction in bytes.
    pub const SIZE: usize = 8;

    /// Builds an instruction.
    pub fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            regs: (dst & 0xf) | (src << 4),
            off,
            imm,
        }
    }

    /// Decodes 8 little-endian bytes.
    pub fn from_bytes(b: [u8; 8]) -> Self {
        Insn {
            code: b[0],
            regs: b[1],
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes to 8 little-endian bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [self.code, self.regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    }

    /// Destination register.
    pub fn dst(&self) -> u8 {
        self.regs & 0xf
    }

    /// Source register (or pseudo marker).
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }

    /// Sets the source register (or pseudo marker).
    pub fn set_src(&mut self, src: u8) {
        self.regs = (self.regs & 0xf) | (src << 4);
    }

    /// Sets the destination register.
    pub fn set_dst(&mut self, dst: u8) {
        self.regs = (self.regs & 0xf0) | (dst & 0xf);
    }

    /// Instruction class.
    pub fn class(&self) -> u8 {
        self.code & 0x07
    }

    /// Memory access size bits (`BPF_SIZE`).
    pub fn size_bits(&self) -> u8 {
        self.code & 0x18
    }

    /// Bytes accessed by an LDX/ST/STX instruction.
    pub fn mem_size(&self) -> u32 {
        match self.size_bits() {
            size::B => 1,
            size::H => 2,
            size::W => 4,
            _ => 8,
        }
    }

    /// First half of a 16-byte `ld_imm64`.
    pub fn is_ld_imm64(&self) -> bool {
        self.code == LD_IMM64
    }

    /// Any call (helper, bpf-to-bpf or kfunc).
    pub fn is_call(&self) -> bool {
        self.code == CALL
    }

    /// A bpf-to-bpf call.
    pub fn is_pseudo_call(&self) -> bool {
        self.is_call() && self.src() == PSEUDO_CALL
    }

    /// A helper call.
    pub fn is_helper_call(&self) -> bool {
        self.is_call() && self.src() == 0
    }

    /// `call helper_id`.
    pub fn call_helper(id: i32) -> Self {
        Insn::new(CALL, 0, 0, 0, id)
    }

    /// `call pc+imm+1` (bpf-to-bpf).
    pub fn call_pseudo(rel: i32) -> Self {
        Insn::new(CALL, 0, PSEUDO_CALL, 0, rel)
    }

    /// `exit`.
    pub fn exit() -> Self {
        Insn::new(EXIT, 0, 0, 0, 0)
    }

    /// `goto pc+off+1`.
    pub fn ja(off: i16) -> Self {
        Insn::new(class::JMP | OP_JA, 0, 0, off, 0)
    }

    /// `dst = imm` (64-bit move, sign-extended).
    pub fn mov64_imm(dst: u8, imm: i32) -> Self {
        Insn::new(class::ALU64 | OP_MOV | SRC_K, dst, 0, 0, imm)
    }

    /// `dst = imm64 ll` with a pseudo `src`; returns both halves.
    pub fn ld_imm64(dst: u8, src: u8, imm: u64) -> [Insn; 2] {
        [
            Insn::new(LD_IMM64, dst, src, 0, imm as u32 as i32),
            Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }

    /// The poison instruction for an unresolvable CO-RE relocation.
    pub fn poison() -> Self {
        Insn::call_helper(POISON_HELPER)
    }

    /// Whether this is the poison instruction.
    pub fn is_poison(&self) -> bool {
        self.is_helper_call() && self.imm == POISON_HELPER
    }
}

/// 64-bit immediate of an `ld_imm64` pair.
pub fn ld_imm64_value(lo: &Insn, hi: &Insn) -> u64 {
    (lo.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32)
}

/// Decodes an instruction stream; the length must be a multiple of 8.
pub fn decode(bytes: &[u8]) -> Result<Vec<Insn>> {
    if bytes.len() % Insn::SIZE != 0 {
        return Err(Error::malformed(
            "instructions",
            format!("{} bytes is not a multiple of 8", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(Insn::SIZE)
        .map(|c| Insn::from_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Encodes instructions back to bytes (what `BPF_PROG_LOAD` takes).
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn layout_matches_kernel_bpf_insn() {
        // include/uapi/linux/bpf.h: struct bpf_insn { __u8 code; __u8 dst_reg:4;
        // __u8 src_reg:4; __s16 off; __s32 imm; } — 8 bytes, 4-aligned.
        assert_eq!(size_of::<Insn>(), 8);
        assert_eq!(align_of::<Insn>(), 4);
        assert_eq!(offset_of!(Insn, code), 0);
        assert_eq!(offset_of!(Insn, regs), 1);
        assert_eq!(offset_of!(Insn, off), 2);
        assert_eq!(offset_of!(Insn, imm), 4);
    }

    #[test]
    fn round_trip_and_fields() {
        // r1 = *(u64 *)(r10 - 8): 79 a1 f8 ff 00 00 00 00
        let b = [0x79, 0xa1, 0xf8, 0xff, 0, 0, 0, 0];
        let i = Insn::from_bytes(b);
        assert_eq!(i.class(), class::LDX);
        assert_eq!(i.dst(), 1);
        assert_eq!(i.src(), 10);
        assert_eq!(i.off, -8);
        assert_eq!(i.mem_size(), 8);
        assert_eq!(i.to_bytes(), b);
        let call = Insn::from_bytes([0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(call.is_pseudo_call());
        assert_eq!(call.imm, -1);
        assert_eq!(Insn::call_pseudo(-1), call);
    }

    #[test]
    fn ld_imm64_pair() {
        let [lo, hi] = Insn::ld_imm64(2, PSEUDO_MAP_VALUE, 0x1234_5678_9abc_def0);
        assert!(lo.is_ld_imm64());
        assert_eq!(lo.src(), PSEUDO_MAP_VALUE);
        assert_eq!(lo.dst(), 2);
        assert_eq!(ld_imm64_value(&lo, &hi), 0x1234_5678_9abc_def0);
        let bytes = encode(&[lo, hi]);
        assert_eq!(bytes.len(), 16);
        assert_eq!(decode(&bytes).unwrap(), vec![lo, hi]);
    }

    #[test]
    fn decode_rejects_partial_instruction() {
        assert!(decode(&[0u8; 12]).is_err());
        assert!(decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn poison_is_a_helper_call() {
        let p = Insn::poison();
        assert!(p.is_poison());
        assert_eq!(p.imm, 195_896_080);
        let mut m = Insn::mov64_imm(3, 7);
        m.set_src(1);
        m.set_dst(4);
        assert_eq!((m.dst(), m.src()), (4, 1));
        assert_eq!(Insn::exit().code, 0x95);
        assert_eq!(Insn::ja(-2).off, -2);
    }
}
