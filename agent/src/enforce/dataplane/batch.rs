//! The `BPF_MAP_*_BATCH` commands, which aya does not wrap: one syscall for many elements; and
//! the element commands on raw key bytes, for scans that resume at a key.
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

/// Batches smaller than this go in from the calling thread.
const PARALLEL_MIN: usize = 8_192;

/// [`update_batch`] split into consecutive parts, one thread each, up to the CPUs available
/// (at most 4): a hash map's inserts take per-bucket locks and allocate per element, so a
/// large batch goes in about as many times faster as there are idle CPUs. Per part, in order:
/// its first index and how many of its elements went in, and why the rest did not.
pub(super) fn update_batch_parallel<K: Sync, V: Sync>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Vec<(usize, usize, Option<io::Error>)> {
    let count = keys.len().min(values.len());
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(4);
    if count < PARALLEL_MIN || threads < 2 {
        return vec![match update_batch(map, &keys[..count], &values[..count]) {
            Ok(()) => (0, count, None),
            Err((added, error)) => (0, added, Some(error)),
        }];
    }
    let part = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .step_by(part)
            .map(|start| {
                let end = (start + part).min(count);
                let (keys, values) = (&keys[start..end], &values[start..end]);
                scope.spawn(move || match update_batch(map, keys, values) {
                    Ok(()) => (start, end - start, None),
                    Err((added, error)) => (start, added, Some(error)),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    (0, 0, Some(io::Error::other("batch insert thread panicked")))
                })
            })
            .collect()
    })
}

/// Key bytes the batch readers set aside per element: room for an IPv6 prefix key (length and
/// address).
pub(super) const MAX_KEY_SIZE: usize = 20;

/// `BPF_MAP_DELETE_BATCH` of `keys`. `Err((n, error))`: the kernel stopped after `n` keys
/// because of `error` (`ENOENT`: key `n` was not there).
pub(super) fn delete_batch<K>(map: &MapData, keys: &[K]) -> Result<(), (usize, io::Error)> {
    const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: 0,
        count: u32::try_from(keys.len()).unwrap_or(u32::MAX),
        map_fd: u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX),
        elem_flags: 0,
        flags: 0,
    };
    let requested = attr.count as usize;
    // SAFETY: `keys` holds `count` keys of the map's key size, alive for the call; the
    // command reads no values.
    match unsafe { batch_command(BPF_MAP_DELETE_BATCH, &mut attr) } {
        Ok(()) if requested == keys.len() => Ok(()),
        Ok(()) => Err((requested, io::Error::from_raw_os_error(libc::E2BIG))),
        Err(error) => Err(((attr.count as usize).min(requested), error)),
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` (`delete`: `BPF_MAP_LOOKUP_AND_DELETE_BATCH`) on the hash map
/// `fd`, resuming at the bucket `in_batch` names (null: the first) and writing where to resume
/// to `out_batch`. Reads up to `values.len()` elements into `keys` (packed at the map's key
/// size, [`MAX_KEY_SIZE`] bytes set aside per element) and `values`, which must be of the
/// map's value size. Returns how many it read and whether the map is done.
pub(super) fn read_batch<V>(
    fd: i32,
    delete: bool,
    in_batch: *const u64,
    out_batch: *mut u64,
    keys: &mut [u8],
    values: &mut [V],
) -> io::Result<(usize, bool)> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
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
    let command = if delete {
        BPF_MAP_LOOKUP_AND_DELETE_BATCH
    } else {
        BPF_MAP_LOOKUP_BATCH
    };
    // SAFETY: `keys` holds `batch` keys of up to MAX_KEY_SIZE bytes and `values` `batch`
    // values of the map's value size (the caller's type), and the caller's batch tokens are 16
    // bytes, more than the hash map's 4-byte bucket cursor.
    let result = unsafe { batch_command(command, &mut attr) };
    let count = (attr.count as usize).min(batch);
    match result {
        Ok(()) => Ok((count, false)),
        // ENOENT: nothing left after this batch (which may still hold entries).
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok((count, true)),
        Err(error) => Err(error),
    }
}

/// [`read_batch`] that deletes what it reads, for the volume maps.
pub(super) fn lookup_and_delete_batch(
    fd: i32,
    in_batch: *const u64,
    out_batch: *mut u64,
    keys: &mut [u8],
    values: &mut [SourceVolume],
) -> io::Result<(usize, bool)> {
    read_batch(fd, true, in_batch, out_batch, keys, values)
}

/// `union bpf_attr` for the element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    /// The value, or for `BPF_MAP_GET_NEXT_KEY` the next key.
    value: u64,
    flags: u64,
}

/// # Safety
/// `attr`'s key and value pointers must be valid for the map's key and value sizes.
unsafe fn elem_command(command: libc::c_long, attr: &mut ElemAttr) -> io::Result<bool> {
    // SAFETY: a valid bpf_attr; the caller vouches for the buffers it points to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<ElemAttr>(),
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENOENT) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (`None`: the first) into `next`, which is the
/// map's key size. `false`: there is none. A `key` no longer in the map starts over at the
/// first key (the kernel's rule for hash maps and LPM tries).
///
/// # Safety
/// `key` and `next` must be exactly the map's key size.
pub(super) unsafe fn next_key(
    map: &MapData,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> io::Result<bool> {
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX),
        pad: 0,
        key: key.map_or(0, |key| key.as_ptr() as u64),
        value: next.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the caller vouches for the key sizes.
    unsafe { elem_command(BPF_MAP_GET_NEXT_KEY, &mut attr) }
}

/// `BPF_MAP_LOOKUP_ELEM` of the raw `key` into `value`, which must be the map's value type.
/// `false`: no such key.
///
/// # Safety
/// `key` must be exactly the map's key size and `V` of its value size.
pub(super) unsafe fn lookup<V>(map: &MapData, key: &[u8], value: &mut V) -> io::Result<bool> {
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX),
        pad: 0,
        key: key.as_ptr() as u64,
        value: std::ptr::from_mut(value) as u64,
        flags: 0,
    };
    // SAFETY: the caller vouches for the key and value sizes.
    unsafe { elem_command(BPF_MAP_LOOKUP_ELEM, &mut attr) }
}
