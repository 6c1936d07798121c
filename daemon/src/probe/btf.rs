//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the byte
//! offset of a named member of a named struct, so that the probe can read kernel structs without
//! CO-RE (Rust eBPF has none) and without a per-kernel build.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html> — a header, a type section (each type a
//! 12-byte `btf_type` followed by kind-specific data) and a string section. Type ids start at 1,
//! in the order the types appear.

use std::path::Path;

use strata_ebpf_common::FieldOffsets;

use super::ProbeError;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

// BTF_KIND_* (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// One `btf_type`, with the members of structs and unions.
#[derive(Debug)]
struct BtfType {
    name_off: u32,
    kind: u32,
    /// `size` for INT/STRUCT/UNION/ENUM*, `type` for PTR/TYPEDEF/qualifiers.
    size_or_type: u32,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero for bitfields (only when the struct's `kind_flag` is set).
    bitfield_size: u32,
}

/// A parsed BTF blob: types and strings.
#[derive(Debug)]
pub struct Btf {
    /// Index 0 is type id 1.
    types: Vec<BtfType>,
    strings: Vec<u8>,
}

/// Where a struct member lives, in bytes, and how big it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLayout {
    /// Byte offset from the start of the struct (anonymous unions/structs on the way included).
    pub offset: u32,
    /// Size of the member's type in bytes (typedefs and qualifiers resolved; pointers are 8).
    pub size: u32,
}

fn malformed(reason: impl Into<String>) -> ProbeError {
    ProbeError::BadBtf {
        reason: reason.into(),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, ProbeError> {
        let end = self.at + 4;
        let raw = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| malformed("type section ends inside a type"))?;
        self.at = end;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), ProbeError> {
        if self.at + n > self.bytes.len() {
            return Err(malformed("type section ends inside a type"));
        }
        self.at += n;
        Ok(())
    }
}

impl Btf {
    /// Reads the running kernel's BTF. A kernel built without `CONFIG_DEBUG_INFO_BTF` has no
    /// such file: [`ProbeError::NoBtf`].
    pub fn from_sys_fs() -> Result<Self, ProbeError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads a BTF file (for example a vmlinux BTF saved from another machine).
    pub fn from_file(path: &Path) -> Result<Self, ProbeError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ProbeError::NoBtf {
                    path: path.to_path_buf(),
                }
            } else {
                malformed(format!("reading {}: {source}", path.display()))
            }
        })?;
        Self::parse(&bytes)
    }

    /// Parses a little-endian BTF blob (what x86-64 and arm64 kernels expose).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProbeError> {
        let header_u32 = |at: usize| -> Result<u32, ProbeError> {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| malformed("truncated header"))
        };
        let magic = bytes
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| malformed("truncated header"))?;
        if magic != BTF_MAGIC {
            return Err(malformed(format!(
                "bad magic {magic:#06x} (not little-endian BTF)"
            )));
        }
        let hdr_len = header_u32(4)? as usize;
        let type_off = header_u32(8)? as usize;
        let type_len = header_u32(12)? as usize;
        let str_off = header_u32(16)? as usize;
        let str_len = header_u32(20)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            bytes
                .get(hdr_len + off..hdr_len + off + len)
                .ok_or_else(|| malformed(format!("{what} section out of bounds")))
        };
        let type_section = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let mut cursor = Cursor {
            bytes: type_section,
            at: 0,
        };
        let mut types = Vec::new();
        while cursor.at < type_section.len() {
            let name_off = cursor.u32()?;
            let info = cursor.u32()?;
            let size_or_type = cursor.u32()?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => cursor.skip(4)?,
                KIND_ARRAY => cursor.skip(12)?,
                KIND_STRUCT | KIND_UNION => {
                    members.reserve(vlen);
                    for _ in 0..vlen {
                        let name_off = cursor.u32()?;
                        let type_id = cursor.u32()?;
                        let offset = cursor.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name_off,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => cursor.skip(8 * vlen)?,
                KIND_DATASEC | KIND_ENUM64 => cursor.skip(12 * vlen)?,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG: nothing.
                0..=19 => {}
                other => return Err(malformed(format!("unknown type kind {other}"))),
            }
            types.push(BtfType {
                name_off,
                kind,
                size_or_type,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let rest = self.strings.get(name_off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn by_id(&self, id: u32) -> Option<&BtfType> {
        id.checked_sub(1)
            .and_then(|index| self.types.get(index as usize))
    }

    /// Follows typedefs and qualifiers to the type that has a shape.
    fn resolve(&self, mut id: u32) -> Option<&BtfType> {
        for _ in 0..32 {
            let ty = self.by_id(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let ty = self.resolve(id)?;
        match ty.kind {
            KIND_PTR => Some(8),
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => Some(ty.size_or_type),
            _ => None,
        }
    }

    /// Byte offset and size of `structure.member`, looking through anonymous unions and structs
    /// (`struct inode` keeps several members in them, and their layout moves between kernels).
    pub fn member(&self, structure: &str, member: &str) -> Option<MemberLayout> {
        let ty = self.types.iter().find(|ty| {
            ty.kind == KIND_STRUCT
                && !ty.members.is_empty()
                && self.name(ty.name_off) == structure.as_bytes()
        })?;
        let (bit_offset, type_id, bitfield_size) = self.find_member(ty, member.as_bytes(), 0)?;
        if bit_offset % 8 != 0 || bitfield_size != 0 {
            return None;
        }
        Some(MemberLayout {
            offset: bit_offset / 8,
            size: self.size_of(type_id)?,
        })
    }

    fn find_member(&self, ty: &BtfType, name: &[u8], depth: u32) -> Option<(u32, u32, u32)> {
        if depth > 8 {
            return None;
        }
        if let Some(m) = ty.members.iter().find(|m| self.name(m.name_off) == name) {
            return Some((m.bit_offset, m.type_id, m.bitfield_size));
        }
        ty.members.iter().filter(|m| m.name_off == 0).find_map(|m| {
            let inner = self.resolve(m.type_id)?;
            if !matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                return None;
            }
            let (offset, type_id, bits) = self.find_member(inner, name, depth + 1)?;
            Some((m.bit_offset + offset, type_id, bits))
        })
    }

    /// The offsets the copy-up probe needs, each checked for the size the probe reads.
    pub fn copy_up_offsets(&self) -> Result<FieldOffsets, ProbeError> {
        let field = |structure: &'static str, member: &'static str, size: u32| {
            let layout = self
                .member(structure, member)
                .ok_or(ProbeError::FieldNotFound { structure, member })?;
            if layout.size == size {
                Ok(layout.offset)
            } else {
                Err(ProbeError::FieldLayout {
                    structure,
                    member,
                    size: layout.size,
                    expected: size,
                })
            }
        };
        Ok(FieldOffsets {
            dentry_d_inode: field("dentry", "d_inode", 8)?,
            dentry_d_sb: field("dentry", "d_sb", 8)?,
            inode_i_mode: field("inode", "i_mode", 2)?,
            inode_i_size: field("inode", "i_size", 8)?,
            super_block_s_dev: field("super_block", "s_dev", 4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    //! These read the build host's real kernel BTF: the point is to parse what kernels emit,
    //! not a hand-made blob. Where `pahole` (Debian `dwarves`) is installed, the offsets are
    //! compared with its independent reading of the same BTF.

    use super::*;

    fn host_btf() -> Option<Btf> {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipping: {VMLINUX_BTF} missing (kernel without CONFIG_DEBUG_INFO_BTF)");
            return None;
        }
        Some(Btf::from_sys_fs().expect("the host kernel's BTF parses"))
    }

    /// `pahole -C STRUCT` prints `\ttype name; /* offset size */`; returns (offset, size).
    fn pahole(structure: &str, member: &str) -> Option<(u32, u32)> {
        let out = std::process::Command::new("pahole")
            .args(["-C", structure, VMLINUX_BTF])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        text.lines().find_map(|line| {
            let (decl, comment) = line.split_once("/*")?;
            let decl = decl.trim().trim_end_matches(';');
            let name = decl.rsplit([' ', '*']).next()?;
            if name != member {
                return None;
            }
            let mut numbers = comment.split_whitespace();
            let offset = numbers.next()?.trim_end_matches(':').parse().ok()?;
            let size = numbers.next()?.parse().ok()?;
            Some((offset, size))
        })
    }

    #[test]
    fn finds_copy_up_fields_in_the_host_kernel_btf() {
        let Some(btf) = host_btf() else { return };
        let offsets = btf.copy_up_offsets().expect("all five fields present");
        eprintln!("{offsets:?}");
        assert!(offsets.is_set());
        // struct dentry starts with d_flags and d_seq; d_inode follows d_parent and d_name.
        assert!(offsets.dentry_d_inode >= 8 && offsets.dentry_d_inode < 128);
        assert!(offsets.dentry_d_sb > offsets.dentry_d_inode && offsets.dentry_d_sb < 256);
        assert_eq!(offsets.dentry_d_inode % 8, 0, "pointers are aligned");
        assert_eq!(offsets.dentry_d_sb % 8, 0, "pointers are aligned");
        // i_mode is the first member of struct inode on every kernel since 2.6.
        assert_eq!(offsets.inode_i_mode, 0);
        assert_eq!(offsets.inode_i_size % 8, 0);
        assert!(offsets.inode_i_size > 0 && offsets.inode_i_size < 256);
        // s_dev follows the s_list list_head (16 bytes) in struct super_block.
        assert_eq!(offsets.super_block_s_dev, 16);
    }

    #[test]
    fn offsets_agree_with_pahole() {
        let Some(btf) = host_btf() else { return };
        if pahole("dentry", "d_inode").is_none() {
            eprintln!("skipping: pahole (Debian dwarves) not installed");
            return;
        }
        for (structure, member) in [
            ("dentry", "d_inode"),
            ("dentry", "d_sb"),
            ("inode", "i_mode"),
            ("inode", "i_size"),
            ("super_block", "s_dev"),
            // Members inside anonymous unions: the recursion must add the union's offset.
            ("inode", "i_nlink"),
            ("inode", "i_rdev"),
            ("dentry", "d_name"),
            ("dentry", "d_lru"),
        ] {
            let ours = btf
                .member(structure, member)
                .unwrap_or_else(|| panic!("{structure}.{member} not found"));
            let theirs = pahole(structure, member)
                .unwrap_or_else(|| panic!("pahole shows no {structure}.{member}"));
            assert_eq!((ours.offset, ours.size), theirs, "{structure}.{member}");
        }
    }

    #[test]
    fn missing_members_and_structs_are_none() {
        let Some(btf) = host_btf() else { return };
        assert_eq!(btf.member("dentry", "no_such_member"), None);
        assert_eq!(btf.member("no_such_struct", "d_inode"), None);
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(matches!(
            Btf::parse(b"\x7fELF not btf at all, long enough for a header"),
            Err(ProbeError::BadBtf { .. })
        ));
        assert!(matches!(Btf::parse(b""), Err(ProbeError::BadBtf { .. })));
    }

    #[test]
    fn a_missing_btf_file_is_no_btf() {
        let err = Btf::from_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(matches!(err, ProbeError::NoBtf { .. }), "{err}");
    }
}
