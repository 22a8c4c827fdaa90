// Assembles an image's root filesystem in the guest: each layer is a read-only EROFS disk found
// by its virtio-blk serial, merged under a private writable upper layer with overlayfs.

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::sys;

/// Where the merged root is mounted (outside the sandbox); the agent chroots into it.
pub const OVERLAY_ROOT: &str = "/sandbox";
const LAYERS_DIR: &str = "/layers";
const UPPER_DIR: &str = "/upper";
/// How long to wait for a disk to appear: virtio devices may probe after init starts.
const DISK_WAIT: Duration = Duration::from_secs(10);
const MS_RDONLY: std::os::raw::c_ulong = 1;

/// Finds the block device whose virtio-blk serial is `serial`, waiting for it to appear.
pub fn find_disk(serial: &str) -> Result<String, String> {
    find_disk_in("/sys/block", serial, DISK_WAIT)
}

fn find_disk_in(sys_block: &str, serial: &str, wait: Duration) -> Result<String, String> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(entries) = fs::read_dir(sys_block) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let found = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
                if found.trim_end_matches(['\n', '\0']) == serial {
                    return Ok(format!("/dev/{name}"));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no disk with serial {serial:?} appeared in {sys_block} within {} s", wait.as_secs()));
        }
        sleep(Duration::from_millis(20));
    }
}

/// The overlayfs `lowerdir` option: the top layer first, as overlayfs stacks them.
pub fn lowerdir(layer_dirs: &[String]) -> String {
    layer_dirs.iter().rev().cloned().collect::<Vec<_>>().join(":")
}

/// Mounts the layers (serials, lowest first) and the overlay at OVERLAY_ROOT, with the upper layer
/// on the ext4 disk `upper_disk` (a named sandbox's, kept across restarts) or else on tmpfs.
/// Returns the mount points in mount order, so power-off can unmount them in reverse.
pub fn assemble(layer_serials: &[String], upper_disk: Option<&str>) -> Result<Vec<String>, String> {
    if layer_serials.is_empty() {
        return Err("an overlay root needs at least one layer".into());
    }
    let mut mounts = Vec::new();
    let mut dirs = Vec::new();
    for (index, serial) in layer_serials.iter().enumerate() {
        let device = find_disk(serial)?;
        let dir = format!("{LAYERS_DIR}/{index}");
        mkdir(&dir)?;
        sys::mount_fs(&device, &dir, "erofs", MS_RDONLY, "")
            .map_err(|e| format!("cannot mount layer {index} ({device}, serial {serial}) as erofs: {e}"))?;
        mounts.push(dir.clone());
        dirs.push(dir);
    }
    mkdir(UPPER_DIR)?;
    match upper_disk {
        Some(serial) => {
            let device = find_disk(serial)?;
            sys::mount_fs(&device, UPPER_DIR, "ext4", 0, "")
                .map_err(|e| format!("cannot mount the writable layer ({device}, serial {serial}) as ext4: {e}"))?;
        }
        None => sys::mount_fs("tmpfs", UPPER_DIR, "tmpfs", 0, "mode=0755").map_err(|e| format!("cannot mount the upper tmpfs: {e}"))?,
    }
    mounts.push(UPPER_DIR.to_string());
    let upper = format!("{UPPER_DIR}/upper");
    let work = format!("{UPPER_DIR}/work");
    mkdir(&upper)?;
    mkdir(&work)?;
    mkdir(OVERLAY_ROOT)?;
    let options = format!("lowerdir={},upperdir={upper},workdir={work}", lowerdir(&dirs));
    sys::mount_fs("overlay", OVERLAY_ROOT, "overlay", 0, &options).map_err(|e| format!("cannot mount the overlay root ({options}): {e}"))?;
    mounts.push(OVERLAY_ROOT.to_string());
    Ok(mounts)
}

fn mkdir(path: &str) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("cannot create {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_puts_the_top_layer_first() {
        let dirs = vec!["/layers/0".to_string(), "/layers/1".to_string(), "/layers/2".to_string()];
        assert_eq!(lowerdir(&dirs), "/layers/2:/layers/1:/layers/0");
    }

    #[test]
    fn finds_a_disk_by_serial_and_names_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("msb-agent-sysblock-{}", std::process::id()));
        for (disk, serial) in [("vda", "msb-layer-0"), ("vdb", "msb-layer-1\n")] {
            fs::create_dir_all(dir.join(disk)).unwrap();
            fs::write(dir.join(disk).join("serial"), serial).unwrap();
        }
        fs::create_dir_all(dir.join("loop0")).unwrap();
        let root = dir.to_str().unwrap();
        assert_eq!(find_disk_in(root, "msb-layer-1", Duration::ZERO).unwrap(), "/dev/vdb");
        assert_eq!(find_disk_in(root, "msb-layer-0", Duration::ZERO).unwrap(), "/dev/vda");
        let err = find_disk_in(root, "msb-layer-9", Duration::ZERO).unwrap_err();
        assert!(err.contains("msb-layer-9"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_overlay_without_layers_is_refused() {
        assert!(assemble(&[], None).unwrap_err().contains("at least one layer"));
    }
}
