use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use datafusion::execution::TempFileFactory;

use super::*;
use crate::error::{Error, ErrorClass};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn spill_files_are_private_and_removed_with_their_query_and_the_gateway() {
    let root = tempfile::tempdir().unwrap();
    let area = SpillArea::open(root.path(), 1 << 20).unwrap();
    let dir = area.dir().to_path_buf();
    assert_eq!(mode(&dir), 0o700);
    let query = QuerySpill::new(Arc::clone(&area), 1 << 20);
    let file = query.create_temp_file("sorting").unwrap();
    let path = file.path().unwrap().to_path_buf();
    assert_eq!(mode(&path), 0o600);
    let mut writer = file.open_writer().unwrap();
    writer.write_all(&[7; 1000]).unwrap();
    writer.finish().unwrap();
    drop(writer);
    assert_eq!(file.size(), Some(1000));
    assert_eq!(
        area.in_use(),
        SpillUse {
            bytes: 1000,
            files: 1
        }
    );
    drop(file);
    assert!(!path.exists(), "a file is removed when dropped");
    assert_eq!(area.in_use(), SpillUse::default());
    assert_eq!(
        query.written(),
        SpillUse {
            bytes: 1000,
            files: 1
        }
    );
    drop(query);
    drop(area);
    assert!(
        !dir.exists(),
        "the gateway's directory is removed when it stops"
    );
}

#[test]
fn a_crashed_gateways_directory_is_removed_and_a_live_ones_kept() {
    let root = tempfile::tempdir().unwrap();
    let live = SpillArea::open(root.path(), 1 << 20).unwrap();
    // A gateway that crashed: its directory and lock file remain, unlocked, old.
    let crashed = root.path().join("gateway-crashed");
    std::fs::create_dir(&crashed).unwrap();
    std::fs::write(crashed.join(LOCK_FILE), b"").unwrap();
    std::fs::write(crashed.join("spill-1"), b"rows").unwrap();
    age(&crashed);
    // One starting now: its lock not taken yet.
    let starting = root.path().join("gateway-starting");
    std::fs::create_dir(&starting).unwrap();
    std::fs::write(starting.join(LOCK_FILE), b"").unwrap();
    let other = root.path().join("not-ours");
    std::fs::create_dir(&other).unwrap();
    age(&other);
    // The live gateway's directory, old too: its lock is held.
    age(live.dir());
    let next = SpillArea::open(root.path(), 1 << 20).unwrap();
    assert!(
        !crashed.exists(),
        "left-overs of a crash are removed at start-up"
    );
    assert!(live.dir().exists(), "a running gateway's directory is kept");
    assert!(
        starting.exists(),
        "a gateway starting may not hold its lock yet"
    );
    assert!(other.exists(), "only gateways' directories are touched");
    assert_ne!(live.dir(), next.dir());
}

/// Makes `dir` look older than a starting gateway's.
fn age(dir: &Path) {
    let old = std::time::SystemTime::now() - 2 * UNLOCKED_GRACE;
    File::open(dir).unwrap().set_modified(old).unwrap();
}

#[test]
fn a_spill_directory_others_may_write_to_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = SpillArea::open(&shared, 1 << 20).unwrap_err();
    assert!(
        refused.to_string().contains("engine.spill_dir"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "nothing is left in it"
    );
}

/// The class a door sees for the failed write `error`.
fn class_of(error: std::io::Error) -> ErrorClass {
    Error::class_of(&datafusion::error::DataFusionError::IoError(error))
}

#[test]
fn the_query_and_gateway_disk_limits_refuse_writes_past_them() {
    let root = tempfile::tempdir().unwrap();
    let area = SpillArea::open(root.path(), 3000).unwrap();
    let first = QuerySpill::new(Arc::clone(&area), 2000);
    let file = first.create_temp_file("sorting").unwrap();
    let mut writer = file.open_writer().unwrap();
    writer.write_all(&[1; 1500]).unwrap();
    let refused = writer.write_all(&[1; 600]).unwrap_err();
    assert!(
        refused.to_string().contains("engine.query_spill_limit"),
        "{refused}"
    );
    assert_eq!(class_of(refused), ErrorClass::ResourceExhausted);

    let second = QuerySpill::new(Arc::clone(&area), 2000);
    let other = second.create_temp_file("aggregating").unwrap();
    let mut other_writer = other.open_writer().unwrap();
    other_writer.write_all(&[2; 1000]).unwrap();
    let refused = other_writer.write_all(&[2; 600]).unwrap_err();
    assert!(
        refused.to_string().contains("engine.spill_limit"),
        "{refused}"
    );
    assert_eq!(class_of(refused), ErrorClass::ResourceExhausted);

    // What the first query held is returned when its file goes.
    drop(writer);
    drop(file);
    other_writer.write_all(&[2; 600]).unwrap();
    assert_eq!(area.in_use().bytes, 1600);
}
