//! The floor under `AddRoutes`: the same routes written straight into an LPM trie of the same
//! layout as `ROUTES_V4` (12-byte key: prefix length, VRF, address; 8-byte value) with raw bpf(2)
//! calls: `BPF_MAP_UPDATE_BATCH` in batches of 10,000 where the kernel supports it for LPM
//! tries, one `BPF_MAP_UPDATE_ELEM` per route where it does not. No gRPC, no validation, no
//! domain state: what is left is the kernel's own cost per insert.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Result};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_NO_PREALLOC: u32 = 1;
/// Key: prefix length (host order, as the kernel's `bpf_lpm_trie_key`), VRF and address (both
/// network order), as the dataplane keys `ROUTES_V4`.
const KEY: usize = 12;
const VALUE: usize = 8;

/// How the routes went in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Batch,
    PerElement,
}

pub(crate) fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed 128-byte bpf_attr with the fields of `cmd` set; the kernel reads
    // (and for batches writes back `count`) within it.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr) as libc::c_long) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn set32(attr: &mut [u64; 16], offset: usize, v: u32) {
    let bytes: &mut [u8; 128] = bytemuck_mut(attr);
    bytes[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
}

pub(crate) fn set64(attr: &mut [u64; 16], offset: usize, v: u64) {
    let bytes: &mut [u8; 128] = bytemuck_mut(attr);
    bytes[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
}

fn bytemuck_mut(attr: &mut [u64; 16]) -> &mut [u8; 128] {
    // SAFETY: [u64; 16] and [u8; 128] have the same size, and u8 has no alignment or validity
    // requirements.
    unsafe { &mut *(attr as *mut [u64; 16] as *mut [u8; 128]) }
}

/// A fresh LPM trie like `ROUTES_V4`, for `capacity` routes; closed on drop.
fn create(capacity: u32) -> Result<OwnedFd> {
    let mut attr = [0u64; 16];
    set32(&mut attr, 0, BPF_MAP_TYPE_LPM_TRIE);
    set32(&mut attr, 4, KEY as u32);
    set32(&mut attr, 8, VALUE as u32);
    set32(&mut attr, 12, capacity);
    set32(&mut attr, 16, BPF_F_NO_PREALLOC);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes `prefixes` (IPv4 /24s, VRF `vrf`) into a fresh trie; returns routes per second and the
/// method the kernel allowed.
pub fn insert(prefixes: &[Ipv4Addr], vrf: u32) -> Result<(f64, Method)> {
    let map = create(prefixes.len() as u32 + 1)?;
    let mut keys = Vec::with_capacity(prefixes.len() * KEY);
    let mut values = Vec::with_capacity(prefixes.len() * VALUE);
    for a in prefixes {
        keys.extend_from_slice(&(32 + 24u32).to_ne_bytes());
        keys.extend_from_slice(&vrf.to_be_bytes());
        keys.extend_from_slice(&a.octets());
        values.extend_from_slice(&1u32.to_ne_bytes()); // next-hop slot
        values.extend_from_slice(&24u32.to_ne_bytes()); // prefix length
    }
    let start = std::time::Instant::now();
    let mut method = Method::Batch;
    let mut done = 0;
    while done < prefixes.len() {
        let n = (prefixes.len() - done).min(10_000);
        let mut attr = [0u64; 16];
        set64(&mut attr, 16, keys[done * KEY..].as_ptr() as u64);
        set64(&mut attr, 24, values[done * VALUE..].as_ptr() as u64);
        set32(&mut attr, 32, n as u32);
        set32(&mut attr, 36, map.as_raw_fd() as u32);
        match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
            Ok(_) => done += n,
            Err(e) if done == 0 && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524)) => {
                // No batch updates for this map type on this kernel.
                method = Method::PerElement;
                break;
            }
            Err(e) => bail!("BPF_MAP_UPDATE_BATCH: {e}"),
        }
    }
    if method == Method::PerElement {
        for i in 0..prefixes.len() {
            let mut attr = [0u64; 16];
            set32(&mut attr, 0, map.as_raw_fd() as u32);
            set64(&mut attr, 8, keys[i * KEY..].as_ptr() as u64);
            set64(&mut attr, 16, values[i * VALUE..].as_ptr() as u64);
            bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|e| anyhow::anyhow!("BPF_MAP_UPDATE_ELEM: {e}"))?;
        }
    }
    Ok((prefixes.len() as f64 / start.elapsed().as_secs_f64(), method))
}
