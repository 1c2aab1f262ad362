//! The Merkle Tree Hash of RFC 9162 (Certificate Transparency 2.0) §2.1, with SHA-256, and its
//! inclusion and consistency proofs: generation (§2.1.3.1, §2.1.4.1) and verification
//! (§2.1.3.2, §2.1.4.2). Pure: no I/O, no clock, and no panics on any input; every refusal is a
//! [`MerkleError`].
//!
//! A proof does not fix the tree size by itself: the same path and root can verify for a larger
//! claimed size when the leaf (or the older tree) lies in a part of the tree the extra leaves do
//! not change. Verifiers must take the size and the root together from one signed statement (a
//! checkpoint), never a size from one source and a root from another.
//!
//! Trees are given by their leaves' hashes ([`leaf_hash`]), so that a caller hashes each leaf
//! once and takes the root of any prefix (the tree at an older size) without hashing again.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, an interior node or a root.
pub type Hash = [u8; 32];

/// Why a proof was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("a tree of size {size} was asked for, but only {leaves} leaves are known")]
    SizeBeyondLeaves { size: u64, leaves: u64 },
    #[error("the older tree size {old_size} is larger than the newer size {new_size}")]
    OlderIsLarger { old_size: u64, new_size: u64 },
    #[error("the proof has {len} hashes where it must be empty")]
    NotEmpty { len: usize },
    #[error("the proof is empty where it must not be")]
    Empty,
    #[error("the proof has too few hashes for a tree of size {size}")]
    TooShort { size: u64 },
    #[error("the proof has more hashes than a tree of size {size} needs")]
    TooLong { size: u64 },
    #[error("the proof leads to root {computed}, not {expected}")]
    RootMismatch { expected: String, computed: String },
    #[error("the proof leads to older root {computed}, not {expected}")]
    OldRootMismatch { expected: String, computed: String },
    #[error("a tree size of {0} does not fit this machine's address space")]
    TooLarge(u64),
}

/// `SHA-256(0x00 || leaf)`: the hash of one leaf (RFC 9162 §2.1.1).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256()`: the hash of the empty tree (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (RFC 9162's `k`); `n` must be at least 2.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k < n - k {
        k <<= 1;
    }
    k
}

/// MTH(D[n]) of RFC 9162 §2.1.1, over the leaves given by their [`leaf_hash`]es.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let (left, right) = leaves.split_at(split(n));
            node_hash(&root(left), &root(right))
        }
    }
}

/// The root of the tree of the first `size` leaves (the tree as it was at that size).
pub fn root_at(size: u64, leaves: &[Hash]) -> Result<Hash, MerkleError> {
    Ok(root(prefix(size, leaves)?))
}

fn prefix(size: u64, leaves: &[Hash]) -> Result<&[Hash], MerkleError> {
    let n = usize::try_from(size).map_err(|_| MerkleError::TooLarge(size))?;
    leaves.get(..n).ok_or(MerkleError::SizeBeyondLeaves {
        size,
        leaves: leaves.len() as u64,
    })
}

/// The inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves:
/// PATH(m, D[n]) of RFC 9162 §2.1.3.1.
pub fn inclusion_proof(index: u64, size: u64, leaves: &[Hash]) -> Result<Vec<Hash>, MerkleError> {
    let tree = prefix(size, leaves)?;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    // index < size <= leaves.len(), so it fits a usize.
    let mut proof = Vec::new();
    path(index as usize, tree, &mut proof);
    Ok(proof)
}

/// PATH(m, D[n]), innermost hash first; `m < tree.len()`.
fn path(m: usize, tree: &[Hash], out: &mut Vec<Hash>) {
    let n = tree.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    let (left, right) = tree.split_at(k);
    if m < k {
        path(m, left, out);
        out.push(root(right));
    } else {
        path(m - k, right, out);
        out.push(root(left));
    }
}

/// The consistency proof from the tree of the first `old_size` leaves to the tree of the first
/// `new_size`: PROOF(m, D[n]) of RFC 9162 §2.1.4.1. Empty when `old_size` is 0 or equals
/// `new_size` (every tree extends the empty tree, and itself).
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    leaves: &[Hash],
) -> Result<Vec<Hash>, MerkleError> {
    let tree = prefix(new_size, leaves)?;
    if old_size > new_size {
        return Err(MerkleError::OlderIsLarger { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size > 0 {
        // old_size <= new_size <= leaves.len().
        subproof(old_size as usize, tree, true, &mut proof);
    }
    Ok(proof)
}

/// SUBPROOF(m, D[n], b), innermost hash first; `0 < m <= tree.len()`.
fn subproof(m: usize, tree: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = tree.len();
    if m == n {
        if !complete {
            out.push(root(tree));
        }
        return;
    }
    let k = split(n);
    let (left, right) = tree.split_at(k);
    if m <= k {
        subproof(m, left, complete, out);
        out.push(root(right));
    } else {
        subproof(m - k, right, false, out);
        out.push(root(left));
    }
}

/// Checks that `proof` proves the leaf whose hash is `leaf` at `index` in the tree of `size`
/// leaves whose root is `root`: the algorithm of RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(MerkleError::TooLong { size });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::TooShort { size });
    }
    if &r != root {
        return Err(MerkleError::RootMismatch {
            expected: hex::encode(root),
            computed: hex::encode(r),
        });
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of `old_size`
/// leaves with root `old_root` (the older tree is its prefix, unchanged): the algorithm of RFC 9162
/// §2.1.4.2. Equal sizes need an empty proof and equal roots; an empty older tree needs an empty
/// proof and the empty tree's root.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OlderIsLarger { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::NotEmpty { len: proof.len() });
        }
        let expected_old = if old_size == 0 {
            empty_root()
        } else {
            *new_root
        };
        if old_root != &expected_old {
            return Err(MerkleError::OldRootMismatch {
                expected: hex::encode(old_root),
                computed: hex::encode(expected_old),
            });
        }
        return Ok(());
    }
    // Step 1: 0 < old_size < new_size from here, and such a proof is never empty.
    let Some((&first, rest)) = proof.split_first() else {
        return Err(MerkleError::Empty);
    };
    // Step 2: when the older tree is a complete subtree, its root is the path's first hash.
    let (start, rest): (Hash, &[Hash]) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        (first, rest)
    };
    // Steps 3 and 4.
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    let (mut fr, mut sr) = (start, start);
    // Step 6.
    for c in rest {
        if snode == 0 {
            return Err(MerkleError::TooLong { size: new_size });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7.
    if snode != 0 {
        return Err(MerkleError::TooShort { size: new_size });
    }
    if &fr != old_root {
        return Err(MerkleError::OldRootMismatch {
            expected: hex::encode(old_root),
            computed: hex::encode(fr),
        });
    }
    if &sr != new_root {
        return Err(MerkleError::RootMismatch {
            expected: hex::encode(new_root),
            computed: hex::encode(sr),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8, 0xAB])).collect()
    }

    fn sha(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    #[test]
    fn known_vectors() {
        // The empty tree: SHA-256 of the empty string.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // RFC 6962's test vector: the leaf hash of the empty leaf is SHA-256(0x00).
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        // Trees of 1, 2, 3 and 5 leaves, by hand.
        let d: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d", b"e"];
        let l: Vec<Hash> = d.iter().map(|x| sha(&[&[0], x])).collect();
        let n = |a: &Hash, b: &Hash| sha(&[&[1], a, b]);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), n(&l[0], &l[1]));
        // Three leaves: k = 2, so ((a b) c).
        assert_eq!(root(&l[..3]), n(&n(&l[0], &l[1]), &l[2]));
        // Five leaves: k = 4, so (((a b) (c d)) e).
        let four = n(&n(&l[0], &l[1]), &n(&l[2], &l[3]));
        assert_eq!(root(&l[..5]), n(&four, &l[4]));
        assert_eq!(root_at(4, &l).unwrap(), four);
        // The inclusion proof of c in the five-leaf tree: d, then (a b), then e.
        assert_eq!(
            inclusion_proof(2, 5, &l).unwrap(),
            vec![l[3], n(&l[0], &l[1]), l[4]]
        );
        // The consistency proof from three leaves to five: c, d, (a b), e.
        assert_eq!(
            consistency_proof(3, 5, &l).unwrap(),
            vec![l[2], l[3], n(&l[0], &l[1]), l[4]]
        );
        // From four (a complete subtree) to five: only e.
        assert_eq!(consistency_proof(4, 5, &l).unwrap(), vec![l[4]]);
    }

    #[test]
    fn every_inclusion_proof_up_to_20_leaves_verifies() {
        let all = leaves(20);
        for size in 1..=20u64 {
            let r = root_at(size, &all).unwrap();
            for index in 0..size {
                let proof = inclusion_proof(index, size, &all).unwrap();
                verify_inclusion(index, size, &all[index as usize], &proof, &r)
                    .unwrap_or_else(|e| panic!("{index} in {size}: {e}"));
                // Another leaf, index, size or root, or a cut or lengthened proof: refused.
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(index, size, &other, &proof, &r).is_err());
                assert!(
                    verify_inclusion(index, size, &all[index as usize], &proof, &other).is_err()
                );
                if size > 1 {
                    let wrong = (index + 1) % size;
                    assert!(
                        verify_inclusion(wrong, size, &all[index as usize], &proof, &r).is_err()
                    );
                }
                // (A larger claimed size can accept the same path and root: see the module docs.
                // The signed checkpoint fixes size and root together.)
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(
                        verify_inclusion(index, size, &all[index as usize], shorter, &r).is_err()
                    );
                }
                let mut longer = proof.clone();
                longer.push(other);
                assert!(verify_inclusion(index, size, &all[index as usize], &longer, &r).is_err());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][0] ^= 1;
                    assert!(verify_inclusion(index, size, &all[index as usize], &bad, &r).is_err());
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_20_leaves_verifies() {
        let all = leaves(20);
        for new in 1..=20u64 {
            let new_root = root_at(new, &all).unwrap();
            for old in 0..=new {
                let old_root = root_at(old, &all).unwrap();
                let proof = consistency_proof(old, new, &all).unwrap();
                verify_consistency(old, new, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("{old} to {new}: {e}"));
                let other = leaf_hash(b"other");
                // A rewritten older tree: refused.
                assert!(verify_consistency(old, new, &other, &new_root, &proof).is_err());
                if old == 0 {
                    // Every tree extends the empty tree: nothing more to refuse.
                    continue;
                }
                assert!(verify_consistency(old, new, &old_root, &other, &proof).is_err());
                // Another older size: refused.
                if old < new {
                    assert!(
                        verify_consistency(old + 1, new, &old_root, &new_root, &proof).is_err()
                    );
                    // The newer tree shrunk back (a rollback): refused.
                    assert_eq!(
                        verify_consistency(new, old, &new_root, &old_root, &proof),
                        Err(MerkleError::OlderIsLarger {
                            old_size: new,
                            new_size: old
                        })
                    );
                }
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(verify_consistency(old, new, &old_root, &new_root, shorter).is_err());
                }
                let mut longer = proof.clone();
                longer.push(other);
                assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][31] ^= 0x80;
                    assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
                }
            }
        }
    }

    /// A leaf changed in the older part of the tree: the newer tree no longer extends the older.
    #[test]
    fn a_rewritten_prefix_is_inconsistent() {
        let all = leaves(12);
        let old_root = root_at(7, &all).unwrap();
        let mut rewritten = all.clone();
        rewritten[3] = leaf_hash(b"rewritten");
        let new_root = root(&rewritten);
        let proof = consistency_proof(7, 12, &rewritten).unwrap();
        assert!(verify_consistency(7, 12, &old_root, &new_root, &proof).is_err());
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let all = leaves(5);
        assert_eq!(
            inclusion_proof(5, 5, &all),
            Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert!(inclusion_proof(0, 0, &all).is_err());
        assert_eq!(
            inclusion_proof(0, 6, &all),
            Err(MerkleError::SizeBeyondLeaves { size: 6, leaves: 5 })
        );
        assert!(inclusion_proof(u64::MAX, u64::MAX, &all).is_err());
        assert!(consistency_proof(4, 3, &all).is_err());
        assert!(consistency_proof(1, 6, &all).is_err());
        assert!(root_at(u64::MAX, &all).is_err());
        let h = all[0];
        assert!(verify_inclusion(0, 0, &h, &[], &h).is_err());
        assert!(verify_inclusion(u64::MAX, u64::MAX, &h, &[h; 70], &h).is_err());
        assert!(verify_inclusion(0, u64::MAX, &h, &[h; 70], &h).is_err());
        assert_eq!(
            verify_consistency(2, 5, &h, &h, &[]),
            Err(MerkleError::Empty)
        );
        assert!(verify_consistency(1, u64::MAX, &h, &h, &[h; 70]).is_err());
        assert!(verify_consistency(u64::MAX - 1, u64::MAX, &h, &h, &[h; 3]).is_err());
        // A nonempty proof between equal sizes, or from the empty tree: refused.
        assert_eq!(
            verify_consistency(3, 3, &h, &h, &[h]),
            Err(MerkleError::NotEmpty { len: 1 })
        );
        assert!(verify_consistency(0, 3, &empty_root(), &h, &[h]).is_err());
        // From the empty tree, only the empty root.
        assert!(verify_consistency(0, 3, &h, &h, &[]).is_err());
        verify_consistency(0, 3, &empty_root(), &h, &[]).unwrap();
    }
}
