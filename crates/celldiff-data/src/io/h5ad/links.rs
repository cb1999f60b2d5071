//! HDF5 soft links in old-style groups, resolved in memory before the file is parsed.
//!
//! h5py writes groups in the original HDF5 format (a symbol table: a v1 B-tree of `SNOD`
//! nodes, names in a local heap) unless asked for `libver="latest"`, and stores a soft link
//! (`f["X"] = h5py.SoftLink("/layers/counts")`) as a symbol-table entry with cache type 2, an
//! undefined object address and the target path in the local heap. anndata follows such links;
//! `hdf5-pure` 0.47 cannot (listing a group that holds one fails with an end-of-file error).
//! [`resolve_soft_links`] rewrites each such entry of an in-memory copy of the file into a hard
//! link to its target (object address, cache type and scratch pad of the target's own entry),
//! which is what reading through the link means. The file on disk is never changed.
//!
//! Only what is needed is parsed: superblock versions 0 and 1, 8-byte offsets and lengths, v1
//! object headers (with continuation blocks), v1 group B-trees, `SNOD` nodes and local heaps.
//! Anything else (a newer superblock, a dangling or external link, a corrupt structure) leaves
//! the bytes unchanged, and the reader reports what `hdf5-pure` finds.

use std::collections::{HashMap, HashSet};

/// Bytes of a file offset / length field; only 8-byte files are handled.
const O: usize = 8;
/// Size of one symbol-table entry: name offset, object address, cache type, reserved, scratch.
const ENTRY: usize = O + O + 4 + 4 + 16;
/// Bounds on the walk (a corrupt file must not make it loop or run long).
const MAX_GROUPS: usize = 100_000;
const MAX_DEPTH: usize = 64;

/// A symbol-table entry: where it is in the file and what it says.
#[derive(Clone)]
struct Entry {
    /// Absolute offset of the entry in the file.
    pos: usize,
    name_off: u64,
    /// Object header address as stored (relative to the base address).
    addr: u64,
    cache_type: u32,
    scratch: [u8; 16],
}

struct Image<'a> {
    b: &'a [u8],
    base: u64,
}

impl Image<'_> {
    fn u(&self, pos: usize, n: usize) -> Option<u64> {
        let s = self.b.get(pos..pos.checked_add(n)?)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(s);
        Some(u64::from_le_bytes(v))
    }

    /// A stored (base-relative) address as an index into the bytes.
    fn at(&self, addr: u64) -> Option<usize> {
        usize::try_from(self.base.checked_add(addr)?).ok()
    }

    /// The null-terminated string at `off` in the data segment of the local heap at `heap`.
    fn heap_str(&self, heap: u64, off: u64) -> Option<String> {
        let h = self.at(heap)?;
        if self.b.get(h..h + 4)? != b"HEAP" {
            return None;
        }
        let seg = self.u(h + 8 + 2 * O, O)?;
        let start = self.at(seg)?.checked_add(usize::try_from(off).ok()?)?;
        let rest = self.b.get(start..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        String::from_utf8(rest[..end].to_vec()).ok()
    }

    /// (B-tree, local heap) addresses of the group whose object header is at `addr`, from its
    /// symbol-table message; `None` for a dataset or a new-style group.
    fn symbol_table(&self, addr: u64) -> Option<(u64, u64)> {
        let h = self.at(addr)?;
        if *self.b.get(h)? != 1 {
            return None; // not a v1 object header
        }
        let size = self.u(h + 8, 4)? as usize;
        let mut chunks = vec![(h + 16, size)];
        let mut k = 0;
        while k < chunks.len() && k < 64 {
            let (start, len) = chunks[k];
            k += 1;
            let mut p = start;
            while p + 8 <= start + len {
                let ty = self.u(p, 2)?;
                let sz = self.u(p + 2, 2)? as usize;
                let data = p + 8;
                match ty {
                    0x11 => return Some((self.u(data, O)?, self.u(data + O, O)?)),
                    0x10 => {
                        chunks.push((self.at(self.u(data, O)?)?, self.u(data + O, O)? as usize))
                    }
                    _ => {}
                }
                p = data + sz;
            }
        }
        None
    }

    /// Every entry of the group with this B-tree, in B-tree order.
    fn entries(&self, btree: u64, depth: usize, out: &mut Vec<Entry>) -> Option<()> {
        let t = self.at(btree)?;
        if self.b.get(t..t + 4)? != b"TREE" || *self.b.get(t + 4)? != 0 || depth > MAX_DEPTH {
            return None;
        }
        let level = *self.b.get(t + 5)?;
        let used = self.u(t + 6, 2)? as usize;
        let first_child = t + 8 + 2 * O + O; // header, then key 0 (a heap offset, O bytes)
        for i in 0..used {
            let child = self.u(first_child + i * (O + O), O)?;
            if level > 0 {
                self.entries(child, depth + 1, out)?;
                continue;
            }
            let s = self.at(child)?;
            if self.b.get(s..s + 4)? != b"SNOD" {
                return None;
            }
            let n = self.u(s + 6, 2)? as usize;
            for j in 0..n {
                let pos = s + 8 + j * ENTRY;
                let mut scratch = [0u8; 16];
                scratch.copy_from_slice(self.b.get(pos + 24..pos + 40)?);
                out.push(Entry {
                    pos,
                    name_off: self.u(pos, O)?,
                    addr: self.u(pos + O, O)?,
                    cache_type: self.u(pos + 2 * O, 4)? as u32,
                    scratch,
                });
            }
        }
        Some(())
    }
}

/// Rewrites every soft link of the old-style groups in `bytes` (a whole HDF5 file, possibly
/// with a user block) into a hard link to its target. Returns how many links were resolved;
/// 0, with `bytes` untouched, when there are none or the file is not in the handled format.
pub(super) fn resolve_soft_links(bytes: &mut [u8]) -> usize {
    let links = match find_links(bytes) {
        Some(l) => l,
        None => return 0,
    };
    for (pos, target) in &links {
        bytes[pos + O..pos + 2 * O].copy_from_slice(&target.addr.to_le_bytes());
        bytes[pos + 2 * O..pos + 2 * O + 4].copy_from_slice(&target.cache_type.to_le_bytes());
        bytes[pos + 24..pos + 40].copy_from_slice(&target.scratch);
    }
    links.len()
}

/// The soft-link entries (their positions) and the entries of their resolved targets.
fn find_links(bytes: &[u8]) -> Option<Vec<(usize, Entry)>> {
    const SIG: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];
    let mut base = 0usize;
    while bytes.get(base..base + 8)? != SIG {
        base = if base == 0 { 512 } else { base * 2 };
    }
    let version = *bytes.get(base + 8)?;
    if version > 1 || *bytes.get(base + 13)? != O as u8 || *bytes.get(base + 14)? != O as u8 {
        return None;
    }
    let img = Image {
        b: bytes,
        base: base as u64,
    };
    let addrs = base + if version == 0 { 24 } else { 28 };
    let root_pos = addrs + 4 * O;
    let root = img.symbol_table(img.u(root_pos + O, O)?)?;
    // Walk every group: full path → entry, and the soft links with their group's path.
    let mut by_path: HashMap<String, Entry> = HashMap::new();
    // (group path, link path, entry, target path)
    let mut soft: Vec<(String, String, Entry, String)> = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![(String::new(), root)];
    while let Some((path, (btree, heap))) = todo.pop() {
        if !seen.insert(btree) || seen.len() > MAX_GROUPS {
            continue;
        }
        let mut entries = Vec::new();
        img.entries(btree, 0, &mut entries)?;
        for e in entries {
            let name = img.heap_str(heap, e.name_off)?;
            let full = format!("{path}/{name}");
            if e.cache_type == 2 {
                let off = u64::from(u32::from_le_bytes(e.scratch[..4].try_into().ok()?));
                soft.push((path.clone(), full, e, img.heap_str(heap, off)?));
                continue;
            }
            if let Some(st) = img.symbol_table(e.addr) {
                todo.push((full.clone(), st));
            }
            by_path.insert(full, e);
        }
    }
    // A link to a link is followed a few steps; a dangling link is left as it is.
    let soft_at: HashMap<&str, (&str, &str)> = soft
        .iter()
        .map(|(group, link, _, target)| (link.as_str(), (group.as_str(), target.as_str())))
        .collect();
    let mut out = Vec::new();
    for (group, _, e, target) in &soft {
        let mut full = normalize(group, target)?;
        for _ in 0..8 {
            match soft_at.get(full.as_str()) {
                Some((g, t)) => full = normalize(g, t)?,
                None => break,
            }
        }
        if let Some(hit) = by_path.get(&full) {
            out.push((e.pos, hit.clone()));
        }
    }
    Some(out)
}

/// `target` (absolute, or relative to `group`) as a normalized absolute path `/a/b`.
fn normalize(group: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        group.split('/').filter(|s| !s.is_empty()).collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.iter().map(|p| format!("/{p}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_relative_and_absolute_targets() {
        assert_eq!(
            normalize("/layers", "dense").as_deref(),
            Some("/layers/dense")
        );
        assert_eq!(
            normalize("/a", "/layers/counts").as_deref(),
            Some("/layers/counts")
        );
        assert_eq!(normalize("/a/b", "../c/./d").as_deref(), Some("/a/c/d"));
        assert_eq!(normalize("", "..").as_deref(), None);
    }

    #[test]
    fn files_without_links_and_corrupt_copies_are_left_unchanged() {
        let src = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let bytes = std::fs::read(src).unwrap();
        let mut copy = bytes.clone();
        assert_eq!(resolve_soft_links(&mut copy), 0);
        assert_eq!(copy, bytes);
        // Prefixes and a flipped metadata region: no panic, nothing rewritten.
        for cut in [0, 8, 100, 600, 2000, bytes.len() / 3] {
            let mut b = bytes[..cut].to_vec();
            assert_eq!(resolve_soft_links(&mut b), 0, "cut at {cut}");
        }
        let mut b = bytes.clone();
        for x in &mut b[96..400] {
            *x ^= 0x5a;
        }
        resolve_soft_links(&mut b);
    }
}
