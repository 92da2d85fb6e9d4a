//! Murmur3 x64_128 over a byte slice, reduced to its low 64 bits.
//!
//! Why this file exists: the `murmur3` crate hashes an `io::Read`, which costs
//! a reader, a `Result` and a byte-at-a-time tail on every call. Ring lookups
//! hash one short key each (an id like `b"42"`), so that overhead was most of
//! the lookup time. This is the reference algorithm (Austin Appleby's
//! `MurmurHash3_x64_128`, seed 0) written over a slice; a property test in
//! `ring::tests` proves it equals the crate's output for arbitrary bytes, and
//! a unit test pins published vectors.
//!
//! It must never change its output: every node of a cluster must map the same
//! key to the same point, including nodes of an older release.

/// First multiplication constant of the x64_128 body.
const C1: u64 = 0x87c3_7b91_1142_53d5;
/// Second multiplication constant of the x64_128 body.
const C2: u64 = 0x4cf5_ad43_2745_937f;

/// The 64-bit hash Rota uses for ring points and keys: Murmur3 x64_128 with
/// seed 0 over `bytes`, low 64 bits (`h1`, i.e. `murmur3_x64_128(..) as u64`).
#[inline]
pub fn hash_key(bytes: &[u8]) -> u64 {
    murmur3_x64_128(bytes) as u64
}

/// Full 128-bit Murmur3 x64_128 with seed 0, laid out like the `murmur3`
/// crate's result: `h1` in the low 64 bits, `h2` in the high 64 bits.
pub fn murmur3_x64_128(bytes: &[u8]) -> u128 {
    let mut h1: u64 = 0;
    let mut h2: u64 = 0;

    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        let (lo, hi) = block.split_at(8);
        let k1 = u64::from_le_bytes(to_array8(lo));
        let k2 = u64::from_le_bytes(to_array8(hi));

        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }

    let tail = blocks.remainder();
    if !tail.is_empty() {
        // The tail is read little-endian: byte j of the tail lands in bits
        // 8*j.. of k1 (first 8 bytes) or k2 (the rest), as in the reference.
        let mut k1: u64 = 0;
        let mut k2: u64 = 0;
        for (j, &b) in tail.iter().enumerate() {
            if j < 8 {
                k1 |= u64::from(b) << (8 * j);
            } else {
                k2 |= u64::from(b) << (8 * (j - 8));
            }
        }
        if tail.len() > 8 {
            h2 ^= mix_k2(k2);
        }
        h1 ^= mix_k1(k1);
    }

    // usize -> u64 is lossless on every platform Rust supports (≤ 64-bit).
    let len = bytes.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);

    (u128::from(h2) << 64) | u128::from(h1)
}

#[inline]
fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

#[inline]
fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

/// Murmur3's finalizer: forces every input bit to affect every output bit.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Copies an 8-byte chunk into an array. `chunks_exact(16)` split at 8 always
/// gives exactly 8 bytes; the zero fallback only exists so there is no panic
/// path (no `unwrap`) in library code.
#[inline]
fn to_array8(s: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    if s.len() == 8 {
        out.copy_from_slice(s);
    }
    out
}
