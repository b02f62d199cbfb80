//! The `BPF_MAP_*_BATCH` commands, which aya does not wrap: one syscall for many elements.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::MapData;
use xdpguard_common::SourceVolume;

/// `union bpf_attr`'s `batch` member, for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Run one `BPF_MAP_*_BATCH` `command`; the kernel updates `attr.count` (how far it got),
/// also on error.
///
/// # Safety
/// `attr`'s key, value and batch-token pointers must be valid for what `command` reads and
/// writes: `attr.count` keys and values of the map's sizes.
unsafe fn batch_command(command: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: a valid bpf_attr; the caller vouches for the buffers it points to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `BPF_MAP_UPDATE_BATCH` of `keys[i] → values[i]` (create or replace). `Err((n, error))`:
/// the kernel stopped after `n` elements because of `error` (for an error about the whole
/// call, such as no batch support, `n` is 0).
pub(super) fn update_batch<K, V>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, io::Error)> {
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let count = keys.len().min(values.len());
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        map_fd: u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX),
        // The kernel accepts no flags here but BPF_F_LOCK: no BPF_NOEXIST.
        elem_flags: 0,
        flags: 0,
    };
    let requested = attr.count as usize;
    // SAFETY: keys and values hold `count` elements of the map's key and value sizes, alive
    // for the call.
    let Err(error) = (unsafe { batch_command(BPF_MAP_UPDATE_BATCH, &mut attr) }) else {
        return if requested == count {
            Ok(())
        } else {
            Err((requested, io::Error::from_raw_os_error(libc::E2BIG)))
        };
    };
    // Per-element failures report how far the kernel got; anything else failed the call.
    let processed = match error.raw_os_error() {
        Some(libc::E2BIG | libc::ENOMEM | libc::ENOSPC) => (attr.count as usize).min(requested),
        _ => 0,
    };
    Err((processed, error))
}

/// Key bytes [`lookup_and_delete_batch`] sets aside per element: room for an IPv6 address.
pub(super) const MAX_KEY_SIZE: usize = 16;

/// One `BPF_MAP_LOOKUP_AND_DELETE_BATCH` on the hash map `fd`, resuming at the bucket
/// `in_batch` names (null: the first) and writing where to resume to `out_batch`. Reads up to
/// `values.len()` elements into `keys` (packed at the map's key size, [`MAX_KEY_SIZE`] bytes
/// set aside per element) and `values`. Returns how many it read and whether the map is done.
pub(super) fn lookup_and_delete_batch(
    fd: i32,
    in_batch: *const u64,
    out_batch: *mut u64,
    keys: &mut [u8],
    values: &mut [SourceVolume],
) -> io::Result<(usize, bool)> {
    const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
    let batch = values.len().min(keys.len() / MAX_KEY_SIZE);
    let mut attr = BatchAttr {
        in_batch: in_batch as u64,
        out_batch: out_batch as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: u32::try_from(batch).unwrap_or(u32::MAX),
        map_fd: u32::try_from(fd).unwrap_or(u32::MAX),
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `keys` holds `batch` keys of up to MAX_KEY_SIZE bytes and `values` `batch`
    // values (counted from their lengths above), and the caller's batch tokens are 16 bytes,
    // more than the hash map's 4-byte bucket cursor.
    let result = unsafe { batch_command(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr) };
    let count = (attr.count as usize).min(batch);
    match result {
        Ok(()) => Ok((count, false)),
        // ENOENT: nothing left after this batch (which may still hold entries).
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok((count, true)),
        Err(error) => Err(error),
    }
}
